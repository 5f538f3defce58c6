# `make bench`: run every bench/<name>.py that is a program (the rest are its shared parts)
# as `python -m bench.<name>`; each prints its figures.
bench: setup $(TEST_PREREQS)
	@for file in bench/*.py; do \
	  name=$$(basename $$file .py); \
	  grep -q '__main__' $$file || continue; \
	  echo "== bench.$$name"; \
	  $(BIN)/python -m bench.$$name; \
	done
