package meshtest

import "testing"

// TestMesh starts one mesh and runs every scenario on it, in an order
// that matters: the last one kills edge A.
func TestMesh(t *testing.T) {
	m := startMesh(t)
	t.Run("placement", func(t *testing.T) { testPlacement(t, m) })
	t.Run("move", func(t *testing.T) { testMove(t, m) })
	t.Run("nearest", func(t *testing.T) { testNearest(t, m) })
	t.Run("residency", func(t *testing.T) { testResidency(t, m) })
	t.Run("breaker", func(t *testing.T) { testBreaker(t, m) })
	t.Run("metrics", func(t *testing.T) { testMetrics(t, m) })
	t.Run("peer-killed", func(t *testing.T) { testPeerKilled(t, m) })
}
