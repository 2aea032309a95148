# Conveniences; the README's two commands are hack/up.sh and hack/test.sh.
.PHONY: up test bench bench-quick

up:
	bash hack/up.sh

test:
	bash hack/test.sh

bench:  ## N = 100, 1,000, 5,000 plus launch cells at 1,000 and 5,000 (about 50 minutes on 2 cores; the committed run was capped, see README); writes bench-results/full.{json,md}
	bash hack/setup.sh && .venv/bin/python hack/bench/bench.py --full

bench-quick:  ## N = 100 and a launch cell at N = 60, what CI runs (about 3 minutes); writes bench-results/quick.{json,md}
	bash hack/setup.sh && .venv/bin/python hack/bench/bench.py --quick
