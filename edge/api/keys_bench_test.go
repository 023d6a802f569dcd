package api_test

import (
	"net/http"
	"net/http/httptest"
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
func BenchmarkKeysOverhead(b *testing.B) {
	limited := []table.Key{{ID: "k", Hash: keyHash(clientKey), Tenant: "acme", RPM: 1 << 40, TPM: 1 << 50}}
	tenants := []table.Tenant{{ID: "acme", RPM: 1 << 40, TPM: 1 << 50}}
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
	base := newKeySurfaces(b, keysTable([]table.Key{{ID: "k", Hash: keyHash(clientKey), Tenant: "acme"}}, []table.Tenant{{ID: "acme"}}), nil)
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
	var withKeys, without time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		withKeys += do(full)
		without += do(base)
	}
	n := float64(b.N)
	b.ReportMetric(float64(withKeys.Nanoseconds())/n, "keys-ns/req")
	b.ReportMetric(float64(without.Nanoseconds())/n, "baseline-ns/req")
	b.ReportMetric(float64((withKeys-without).Nanoseconds())/n, "added-ns/req")
}
