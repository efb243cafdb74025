#!/bin/sh
# How results/vamo/fairgrad3 was made (2026-12-07, working tree of commit 3ee80c7: FairGrad's
# damped Newton solve). The data and the STL/VAMO models of seeds 1-2 are those of
# results/vamo/seeds5 (copied: /tmp/s33/vamo -> $O). Seed 0's FairGrad is baselines32.json's.
# The training was paused (SIGSTOP) while feed benchmarks ran; train_s includes the pauses.
O=/tmp/s34/vamo
for s in 1 2; do python benchmarks/vamo_table.py train --seed $s --variants fairgrad --threads 1 --out $O --budget-min 600; done
for s in 1 2; do python benchmarks/vamo_table.py select --seed $s --variants fairgrad --out $O; done
for s in 1 2; do python benchmarks/vamo_table.py eval --seed $s --groups table1 --out $O; done
cp $O/eval-s1.json $O/eval-s2.json $O/select-s1.json $O/select-s2.json results/vamo/fairgrad3/
