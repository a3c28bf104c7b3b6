"""Path parameter types every handler shares, so an id is checked the same way on every route."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Path
from pydantic import AfterValidator

from shared.limits import ID_PATTERN, MAX_ID_BYTES, fits_id_bytes

# max_length counts characters; the validator counts the UTF-8 bytes that DynamoDB keys hold.
PathId = Annotated[str, Path(min_length=1, max_length=MAX_ID_BYTES, pattern=ID_PATTERN,
                             description=f"At most {MAX_ID_BYTES} bytes in UTF-8, percent-encoded in the URL; "
                                         "not blank, no NUL"),
                   AfterValidator(fits_id_bytes)]
