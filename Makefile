# Conveniences; the README's two commands are hack/up.sh and hack/test.sh.
.PHONY: up test bench bench-quick

up:
	bash hack/up.sh

test:
	bash hack/test.sh

bench:  ## N = 100, 1,000, 5,000 (about 45 minutes on 2 cores); writes bench-results/full.{json,md}
	bash hack/setup.sh && .venv/bin/python hack/bench/bench.py --full

bench-quick:  ## N = 100, what CI runs (about 2 minutes); writes bench-results/quick.{json,md}
	bash hack/setup.sh && .venv/bin/python hack/bench/bench.py --quick
