package main

import (
	"testing"

	"github.com/nixery/nixery/bench/pkgset"
)

// TestAlgorithms runs the whole workload once per algorithm, budget and
// package set shape: every grouping must be a partition of the closure
// within the budget, no algorithm may download less than the lower bound,
// and layers.Group and layers.GroupWith may not download more than the
// grouping they replaced.
func TestAlgorithms(t *testing.T) {
	for name, shape := range pkgset.Shapes {
		t.Run(name, func(t *testing.T) { testAlgorithms(t, pkgset.GenerateShape(1, shape)) })
	}
}

func testAlgorithms(t *testing.T, set *pkgset.Set) {
	pop := set.Popularity()
	closures, lower, _, _, err := workload(set)
	if err != nil {
		t.Fatal(err)
	}
	for _, budget := range []int{5, 19, 23, 29, 99} {
		downloaded := map[string]int64{}
		for _, alg := range algorithms(pop) {
			r, err := simulate(set, closures, alg, budget)
			if err != nil {
				t.Fatalf("%s, budget %d: %v", alg.name, budget, err)
			}
			if r.overBudget > 0 || r.maxLayers > budget {
				t.Errorf("%s, budget %d: %d images over budget (max %d layers)", alg.name, budget, r.overBudget, r.maxLayers)
			}
			if r.downloaded < lower {
				t.Errorf("%s, budget %d: downloaded %d < lower bound %d", alg.name, budget, r.downloaded, lower)
			}
			for i := range r.excess {
				if r.floor[i] < 0 || r.floor[i] > r.excess[i] {
					t.Errorf("%s, budget %d, %s: forced excess %d outside [0, excess %d]", alg.name, budget, pkgset.Workload[i], r.floor[i], r.excess[i])
				}
			}
			downloaded[alg.name] = r.downloaded
		}
		for now, before := range map[string]string{
			"layers.Group (graph only)":     "previous layers.Group (graph only)",
			"layers.GroupWith (popularity)": "previous layers.GroupWith (popularity)",
		} {
			if downloaded[now] == 0 || downloaded[before] == 0 {
				t.Fatalf("budget %d: no figures for %q or %q", budget, now, before)
			}
			if downloaded[now] > downloaded[before] {
				t.Errorf("budget %d: %s downloads %d bytes, more than %s (%d)", budget, now, downloaded[now], before, downloaded[before])
			}
		}
	}
}
