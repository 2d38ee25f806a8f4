#!/bin/sh
# After the report (launch.sh's last step): the rows, the claim, the controls' verdicts and the
# overlays of the best tuned baseline and each candidate on the same test images, and where their
# maps lie and why their boxes fail (diagnose_maps.py), under this
# folder. Usage: sh experiments/results/tuned/finalize.sh BASELINE@LEVEL [more BASELINE@LEVEL]
# (the best tuned baseline at each level, as claim.py's table names it).
set -e
cd /work/main
R=experiments/results/tuned
PY=.venv/bin/python
cp runs/tuned/study.csv runs/tuned/study.md runs/tuned/study.png runs/tuned/tuning.csv runs/tuned/tuning.md $R/
$PY experiments/cost.py $R/probes.csv $R/tuning.csv $R/study.csv > $R/cost.md
$PY experiments/claim.py --csv=$R/study.csv --write=experiments/results/claim.json > $R/claim.md || true
$PY experiments/controls.py --csv=$R/study.csv > $R/controls.md
CANDIDATES=excam,wildcat_cluster,excam_cluster,wildcat_affinity,excam_affinity,wildcat_guided,excam_guided,excam_m4_div,wildcat_bas,wildcat_bas_detached,excam_gap,excam_learned
for pair in "$@"; do
  baseline=${pair%@*}; level=${pair#*@}
  $PY experiments/compare_maps.py --study=runs/tuned --choices=runs/tuned/choices.json \
    --methods=$baseline,$CANDIDATES --body_cue=$level --seed=200 --split=test \
    --images=0,1,2,3,4,5 --out=$R/overlays_cue${level}_seed200.png
  # Why the boxes fail: where the maps lie and the kinds of failed CorLoc samples (test images).
  $PY experiments/diagnose_maps.py --study=runs/tuned --choices=runs/tuned/choices.json \
    --methods=$baseline,$CANDIDATES --body_cue=$level --seeds=200,201 --split=test \
    --images=150 > $R/diagnosis_cue${level}.md
done
cp runs/tuned/choices.json $R/choices.json
echo "wrote $R/{study.csv,study.md,study.png,tuning.csv,tuning.md,claim.md,controls.md,cost.md,choices.json}, the overlays and diagnosis_cue*.md"
