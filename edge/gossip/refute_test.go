package gossip

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

// TestRefutationNeverRevivesOldModels: a node refuting a suspicion
// republishes its ready models while its owner may be changing them. The
// record it leaves must always hold the models last set: a refutation
// that read the old set and published it under a newer version would
// make the fleet believe, until the next change, that the node still
// serves a model it unloaded.
func TestRefutationNeverRevivesOldModels(t *testing.T) {
	nodes := startCluster(t, 1, func(i int) Config { return fastConfig(nodeID(i)) })
	n := nodes[0]
	for i := range 3000 {
		want := []string{fmt.Sprint("m", i)}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			n.SetReadyModels(want)
		}()
		go func() {
			defer wg.Done()
			n.suspected(encodeSuspicion(suspicion{Node: n.ID(), By: "other", At: int64(i + 1)}))
		}()
		wg.Wait()
		if got := n.tab.ownModels(n.ID()); !slices.Equal(got, want) {
			t.Fatalf("round %d: own record holds %v after SetReadyModels(%v) raced a refutation", i, got, want)
		}
	}
}
