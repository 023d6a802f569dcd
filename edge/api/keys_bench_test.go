package api_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/usage"
	"github.com/meridian-mesh/meridian/shared/table"
)

// BenchmarkKeysOverhead measures what limit checking and usage records
// add to a request's path: the same chat request through the OpenAI
// surface, with a key that has RPM and TPM limits (and its tenant too)
// and a usage recorder, and with a key that has none and no recorder,
// alternately in one loop, so both see the same machine noise.
//
// Most of what rpm+tpm adds is OpenAI's six x-ratelimit headers, not the
// checks: net/http clones the header map at WriteHeader, and six more
// entries take it past the eight a small Go map holds, so it grows into
// a table and is cloned as one. With requests only (three headers) the
// map stays small.
func BenchmarkKeysOverhead(b *testing.B) {
	// Both limits, on key and tenant: six headers on every answer.
	// Requests only: three.
	b.Run("rpm+tpm", func(b *testing.B) { keysOverhead(b, 1<<40, 1<<50) })
	b.Run("rpm", func(b *testing.B) { keysOverhead(b, 1<<40, 0) })
}

func keysOverhead(b *testing.B, rpm, tpm int64) {
	limited := []*table.Key{{ID: "k", Hash: keyHash(clientKey), Tenant: "acme", RPM: rpm, TPM: tpm}}
	tenants := []table.Tenant{{ID: "acme", RPM: rpm, TPM: tpm}}
	uc := usage.DefaultConfig()
	uc.Node, uc.Dir = "edge-a", b.TempDir()
	rec, err := usage.New(uc)
	if err != nil {
		b.Fatal(err)
	}
	defer rec.Close()
	rec.Start(nil) // the spool alone: the bus's work is off the path either way
	lim := newLimiter(b)
	full := newKeySurfaces(b, keysTable(limited, tenants), func(c *api.Config) { c.Limits, c.Usage = lim, rec })
	base := newKeySurfaces(b, keysTable([]*table.Key{{ID: "k", Hash: keyHash(clientKey), Tenant: "acme"}}, []table.Tenant{{ID: "acme"}}), nil)
	do := func(s *keySurfaces) time.Duration {
		r := httptest.NewRequest(http.MethodPost, chatPath, strings.NewReader(chatM))
		r.Header.Set("Authorization", "Bearer "+clientKey)
		r.Header.Set(api.HeaderRequestID, "req-bench")
		r = r.WithContext(gateway.WithClient(r.Context(), &gateway.Client{}))
		w := httptest.NewRecorder()
		start := time.Now()
		s.mux.ServeHTTP(w, r)
		d := time.Since(start)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
		return d
	}
	withKeys, without := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		withKeys = append(withKeys, do(full))
		without = append(without, do(base))
	}
	// Medians: on a shared machine a few requests wait for the CPU for
	// far longer than the path takes, and would swamp a mean.
	k, w := median(withKeys), median(without)
	b.ReportMetric(float64(k.Nanoseconds()), "keys-ns/req")
	b.ReportMetric(float64(w.Nanoseconds()), "baseline-ns/req")
	b.ReportMetric(float64((k - w).Nanoseconds()), "added-ns/req")
}

func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}
