# `make bench`: run every bench/<name>.py as `python -m bench.<name>`; each prints its figures.
bench: setup $(TEST_PREREQS)
	@for file in bench/*.py; do \
	  name=$$(basename $$file .py); \
	  [ "$$name" = __init__ ] && continue; \
	  echo "== bench.$$name"; \
	  $(BIN)/python -m bench.$$name; \
	done
