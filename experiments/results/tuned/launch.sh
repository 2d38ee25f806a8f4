#!/bin/sh
# Amendment 2: the probes over seeds 0-7 at 0.5 and 0.75, then tuning at the certified levels and
# at body_cue 1 (resumable: rerun this script). It runs from a worktree of main, so that other work
# does not change the code under a running study.
# A new checkout has no runs/: the finished cells come from the rows committed here (a study
# skips the cells its CSV holds); commit runs/probes/study.csv and runs/tuned/tuning.csv back here.
cd /work/main
[ -d /work/tune-wt ] || git worktree add --detach ../tune-wt main
# Amendment 3: the study runs the code of main (reorganised; the same numbers on the same cores).
git -C /work/tune-wt checkout -q --detach main
R=/work/main/experiments/results/tuned
mkdir -p /work/main/runs/probes /work/main/runs/tuned
[ -f /work/main/runs/probes/study.csv ] || cp $R/probes.csv /work/main/runs/probes/study.csv
[ -f /work/main/runs/tuned/tuning.csv ] || { [ -f $R/tuning.csv ] && cp $R/tuning.csv /work/main/runs/tuned/tuning.csv; }
cd /work/tune-wt
export PYTHONPATH=/work/tune-wt  # The worktree's code, not the editable install's (main).
PY=/work/main/.venv/bin/python
P="--workdir=/work/main/runs/probes --set=model.kmax=0.3"  # Finished: skipped.
$PY experiments/study.py $P --methods=body_only --body_cue=0.5,0.75 --seeds=3,4,5,6,7 || exit 1
$PY experiments/study.py $P --methods=part_only --body_cue=0 --seeds=3,4,5,6,7 || exit 1
$PY experiments/certify.py --csv=/work/main/runs/probes/study.csv > /work/main/runs/tuned/certify.md
LEVELS=$($PY experiments/certify.py --csv=/work/main/runs/probes/study.csv --levels)
CUES=$(echo "${LEVELS:+$LEVELS,}1")
echo "tuning at body_cue $CUES"
exec $PY experiments/study.py --tune --jobs=2 --workdir=/work/main/runs/tuned \
  --methods=wildcat,excam,wildcat_max,cam,wildcat_relative,adl,wildcat_cluster,excam_cluster,wildcat_affinity,excam_affinity,wildcat_guided,excam_guided,acol,acol_zero \
  --body_cue=$CUES --seeds=100,101
