"""What every browser test shares: one local stack with a small demo shop sent through the API
as the shop's backend sends it and a trained model, and one headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack import stack
from devstack.api_client import ApiClient
from devstack.demo_data import generate_shop
from devstack.dynamodb_local import free_port
from tests.training_data import A_MODEL_SERVES

CHROMIUM = Path("/usr/bin/chromium")
STACK_LOG_LINES = 80
_stack_logs: list[Path] = []  # the session's stack, for the report of a test that fails


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test's report ends with the stack's log: what the page was shown is often
    an answer whose cause (a traceback, a warning) only the gateway printed."""
    report = (yield).get_result()
    if report.when == "call" and report.failed and _stack_logs and _stack_logs[-1].exists():
        lines = _stack_logs[-1].read_text(errors="replace").splitlines()[-STACK_LOG_LINES:]
        report.sections.append((f"the local stack's log, its last {len(lines)} lines", "\n".join(lines)))


@pytest.fixture(scope="session")
def shop_stack_state(tmp_path_factory):
    """(the stack's state: its url, DynamoDB Local and tables; the shop's backend client; the generated shop)."""
    state_dir = tmp_path_factory.mktemp("web-stack")
    state, _ = stack.up(free_port(), state_dir)
    _stack_logs.append(state_dir / "stack.log")
    try:
        api = ApiClient.for_stack(state_dir)
        shop = generate_shop(seed=11, n_users=200, n_items=80)
        assert not api.put_items(shop.items).rejected
        api.put_users(shop.users)
        assert not api.send_events(shop.events).rejected
        api.train_and_wait(A_MODEL_SERVES, timeout=300)  # the pages show a model's answers and reasons
        yield state, api, shop
    finally:
        stack.down(state_dir)


@pytest.fixture(scope="session")
def shop_stack(shop_stack_state):
    """(base url, the shop's backend client, the generated shop)."""
    state, api, shop = shop_stack_state
    return state.url, api, shop


@pytest.fixture(scope="session")
def chromium():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()
