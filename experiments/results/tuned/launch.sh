#!/bin/sh
# Amendment 2: the probes over seeds 0-7 at 0.5 and 0.75, then tuning at the certified levels and
# at body_cue 1, then the report on the test split (resumable: rerun this script). It runs from a worktree of main, so that other work
# does not change the code under a running study.
# A new checkout has no runs/: the finished cells come from the rows committed here (a study
# skips the cells its CSV holds); commit runs/probes/study.csv, runs/tuned/tuning.csv and
# runs/tuned/study.csv back here.
cd /work/main
[ -d /work/tune-wt ] || git worktree add --detach ../tune-wt main
# Amendment 3: the study runs the code of main (reorganised; the same numbers on the same cores).
git -C /work/tune-wt checkout -q --detach main
R=/work/main/experiments/results/tuned
mkdir -p /work/main/runs/probes /work/main/runs/tuned
[ -f /work/main/runs/probes/study.csv ] || cp $R/probes.csv /work/main/runs/probes/study.csv
[ -f /work/main/runs/tuned/tuning.csv ] || { [ -f $R/tuning.csv ] && cp $R/tuning.csv /work/main/runs/tuned/tuning.csv; }
[ -f /work/main/runs/tuned/study.csv ] || { [ -f $R/study.csv ] && cp $R/study.csv /work/main/runs/tuned/study.csv; }
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
$PY experiments/study.py --tune --jobs=2 --workdir=/work/main/runs/tuned \
  --methods=wildcat,excam,wildcat_max,cam,wildcat_relative,adl,wildcat_cluster,excam_cluster,wildcat_affinity,excam_affinity,wildcat_guided,excam_guided,acol,acol_zero,excam_m4_div,wildcat_bas,wildcat_bas_detached,excam_gap,excam_learned \
  --body_cue=$CUES --seeds=100,101 || exit 1
# The report: every method at its choice (controls and AdvCAM inherit theirs), the test split,
# seeds never used for a choice; seed by seed, so the rows so far always pair every method.
exec $PY experiments/study.py --jobs=2 --workdir=/work/main/runs/tuned \
  --choices=/work/main/runs/tuned/choices.json --split=test \
  --methods=cam,wildcat,wildcat_max,wildcat_relative,adl,acol,acol_zero,excam,excam_hard,excam_d07,excam_m4,excam_m8,wildcat_cluster,excam_cluster,wildcat_affinity,excam_affinity,wildcat_guided,excam_guided,excam_m4_div,wildcat_bas,wildcat_bas_detached,excam_gap,excam_learned,wildcat_advcam,wildcat_advcam_relative \
  --body_cue=$CUES --seeds=200,201,202,203,204,205,206,207
