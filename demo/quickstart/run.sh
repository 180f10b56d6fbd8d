#!/usr/bin/env bash
# Runs every quickstart lesson with velo-sql, then shows where the outputs are.
# Usage: demo/quickstart/run.sh [path/to/velo-sql]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
velo=${1:-$here/../../.venv/bin/velo-sql}
python=$(dirname "$velo")/python
cd "$here"
rm -rf output velo-data
if [ ! -f data/measurements.txt ]; then
  echo "generating data/measurements.txt (1,000,000 rows) for lesson 8"
  "$python" generate_1brc.py 1000000 data/measurements.txt
fi
for lesson in [0-9][0-9]_*.sql; do
  echo
  echo "=== $lesson: $(sed -n 's/^-- Lesson [0-9]*: //p' "$lesson" | head -1)"
  "$velo" run "$lesson"
done
echo
echo "Outputs are in $here/output/:"
ls -1 output
echo "Dead letters and checkpoints (if any) are under $here/velo-data/."
echo "Lesson 7's error groups are in its summary above; the same appear on /errors"
echo "when a server runs it: velo-sql deploy-app --file demo/quickstart/07_poison.sql"
