"""train.py with tests/repeat_bit_env.py registered first (its one registry line), as a user's own env would be."""

import runpy
import sys

import repeat_bit_env

repeat_bit_env.register()
sys.argv[0] = "train.py"
runpy.run_path("train.py", run_name="__main__")
