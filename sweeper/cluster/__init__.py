"""The launcher side: plan trials onto the cluster, build targets (stage 1), run trials under Ray Tune/Train."""
