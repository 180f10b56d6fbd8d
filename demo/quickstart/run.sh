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
  # The lesson's description: its first comment lines, up to the first annotation.
  about=$(awk '/^-- @/ || !/^--/ {exit} {sub(/^-- (Lesson [0-9]+: )?/, ""); print}' "$lesson")
  echo "=== $lesson: $about"
  "$velo" run "$lesson"
done
echo
echo "Outputs are in $here/output/:"
ls -1 output
if [ -d velo-data ]; then
  echo "Dead letters are under $here/velo-data/."
fi
echo "Lesson 7's error groups are in its summary above; the same appear on"
echo "http://127.0.0.1:8080/errors when a server runs it (from the repository root):"
echo "  .venv/bin/velo-sql deploy-app --file demo/quickstart/07_poison.sql --data-dir demo/quickstart/velo-data"
