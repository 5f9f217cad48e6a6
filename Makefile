# The two commands of the README. Each installs what is missing first (scripts/bootstrap.sh).
.PHONY: install serve test clean

install:
	@scripts/bootstrap.sh

serve: install  ## run the embedded default on http://127.0.0.1:8000 and ingest the project's docs
	@scripts/serve_local.sh

test: install  ## run the whole test suite
	@scripts/test.sh

clean:
	rm -rf .ragserve .pytest_cache
