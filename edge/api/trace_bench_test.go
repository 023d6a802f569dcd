package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/shared/table"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// BenchmarkTracingOverhead measures what tracing costs a request's
// path: the same chat request through the OpenAI surface with tracing
// off (no Tracer: the default) and on (a server span per request, batched
// to an exporter that drops them), alternately in one loop, so both see
// the same machine noise. It also reports the allocations of a request
// with tracing off, which must not grow when tracing code is added:
// compare with the same benchmark on the commit before.
func BenchmarkTracingOverhead(b *testing.B) {
	tab := keysTable([]*table.Key{{ID: "k", Hash: keyHash(clientKey), Tenant: "acme"}}, []table.Tenant{{ID: "acme"}})
	off := newKeySurfaces(b, tab, nil)
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	b.Cleanup(func() { tp.Shutdown(context.Background()) })
	on := newKeySurfaces(b, tab, func(c *api.Config) { c.Tracer = tp.Tracer("bench") })
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
	offAllocs := testing.AllocsPerRun(100, func() { do(off) })
	onAllocs := testing.AllocsPerRun(100, func() { do(on) })
	offs, ons := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		offs = append(offs, do(off))
		ons = append(ons, do(on))
	}
	f, n := median(offs), median(ons)
	b.ReportMetric(float64(f.Nanoseconds()), "off-ns/req")
	b.ReportMetric(float64(n.Nanoseconds()), "on-ns/req")
	b.ReportMetric(offAllocs, "off-allocs/req")
	b.ReportMetric(onAllocs, "on-allocs/req")
}
