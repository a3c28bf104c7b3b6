# The one build recipe of every function: each functions/<name>/Makefile includes this file and
# names its target (sam build runs build-<LogicalId>, BuildMethod: makefile). It packages the
# handler, plus requirements.txt where the function has one. The shared package and Powertools
# come from SharedLayer, boto3 from the runtime.
#
# Wheels are fetched for the Lambda platform, not for the machine that builds: CPython 3.12 on
# Amazon Linux 2023, whose glibc 2.34 runs every manylinux wheel up to manylinux_2_34.
# implicit's wheel is not repaired: its extensions need libgomp.so.1 from the system, and the
# python3.12 runtime does not promise one. auditwheel (with patchelf; ./dev package provides
# both) grafts this machine's libgomp into implicit.libs/ and sets the extensions' RPATH to it;
# --plat refuses a libgomp that needs a newer glibc than Lambda's. implicit's CUDA extension
# cannot load on Lambda and is left out, as is zstandard's CFFI backend (12 MB; CPython loads its
# C backend).
LAMBDA_PLATFORMS := manylinux1_x86_64 manylinux2010_x86_64 manylinux2014_x86_64 \
	$(foreach minor,$(shell seq 17 34),manylinux_2_$(minor)_x86_64)
LAMBDA_WHEELS := $(addprefix --platform ,$(LAMBDA_PLATFORMS)) \
	--implementation cp --python-version 3.12 --only-binary=:all:
PIP := python3 -m pip --quiet --disable-pip-version-check
CUDA_LIBS := libcudart.so.* libcublas.so.* libcublasLt.so.* libcurand.so.* librmm.so librapids_logger.so

define BUILD_FUNCTION
	cp *.py "$(ARTIFACTS_DIR)/"
	@[ ! -f requirements.txt ] || { set -eu; wheels=$$(mktemp -d); trap 'rm -rf "$$wheels"' EXIT; \
		echo "$@: requirements.txt as wheels for CPython 3.12, manylinux_2_34_x86_64"; \
		$(PIP) download -r requirements.txt --dest "$$wheels/pypi" $(LAMBDA_WHEELS); \
		if ls "$$wheels"/pypi/implicit-*.whl >/dev/null 2>&1; then \
			command -v auditwheel >/dev/null || { echo "$@: auditwheel and patchelf must be on PATH" \
				"(./dev package provides them)" >&2; exit 1; }; \
			echo "$@: auditwheel repair implicit (bundles libgomp)"; \
			auditwheel repair --plat manylinux_2_34_x86_64 $(foreach lib,$(CUDA_LIBS),--exclude '$(lib)') \
				--wheel-dir "$$wheels/repaired" "$$wheels"/pypi/implicit-*.whl; \
			rm "$$wheels"/pypi/implicit-*.whl; \
		fi; \
		$(PIP) install --no-compile --no-warn-conflicts --no-index --no-deps \
			--target "$(ARTIFACTS_DIR)" $(LAMBDA_WHEELS) "$$wheels"/*/*.whl; \
		rm -f "$(ARTIFACTS_DIR)"/implicit/gpu/_cuda*.so "$(ARTIFACTS_DIR)"/zstandard/_cffi*.so; }
endef
