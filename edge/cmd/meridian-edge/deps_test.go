package main

import (
	"os/exec"
	"strings"
	"testing"
)

// allowedModules are the third-party module paths the edge binary may
// link. The edge runs at every PoP, so its weight is guarded: a new
// dependency must be added here on purpose, in review.
var allowedModules = []string{
	"github.com/meridian-mesh/meridian/",
	"github.com/prometheus/",                              // metrics
	"github.com/beorn7/perks/",                            // (prometheus)
	"github.com/cespare/xxhash/",                          // (prometheus)
	"github.com/munnerz/goautoneg",                        // (prometheus)
	"google.golang.org/protobuf/",                         // (prometheus)
	"golang.org/x/sys/",                                   // (prometheus procfs)
	"go.yaml.in/yaml/v3",                                  // config file
	"github.com/hashicorp/memberlist",                     // edge gossip
	"github.com/hashicorp/go-",                            // (memberlist: metrics, msgpack, sockaddr, immutable-radix, multierror)
	"github.com/hashicorp/errwrap",                        // (memberlist)
	"github.com/hashicorp/golang-lru",                     // (memberlist)
	"github.com/google/btree",                             // (memberlist)
	"github.com/miekg/dns",                                // (memberlist)
	"github.com/sean-/seed",                               // (memberlist)
	"golang.org/x/net/",                                   // (memberlist, via miekg/dns)
	"github.com/quic-go/quic-go",                          // links between edges (QUIC)
	"github.com/ollama/ollama/",                           // api: the local engine's model management
	"golang.org/x/crypto/",                                // (ollama api: request signing)
	"github.com/google/uuid",                              // (ollama api)
	"github.com/wk8/go-ordered-map/",                      // (ollama api)
	"github.com/bahlo/generic-list-go",                    // (ollama api, via go-ordered-map)
	"github.com/buger/jsonparser",                         // (ollama api, via go-ordered-map)
	"github.com/mailru/easyjson/",                         // (ollama api, via go-ordered-map)
	"github.com/oschwald/maxminddb-golang/",               // GeoIP: where clients are (edge/geo)
	"gopkg.in/yaml.v3",                                    // (ollama api, via go-ordered-map)
	"github.com/maypok86/otter/v2",                        // the edge cache (edge/cache)
	"github.com/nats-io/nats.go",                          // the routing table from the control plane (edge/tablesync)
	"github.com/nats-io/nkeys",                            // (nats.go)
	"github.com/nats-io/nuid",                             // (nats.go)
	"github.com/klauspost/compress/",                      // (nats.go: websocket compression)
	"go.opentelemetry.io/otel",                            // traces over OTLP/HTTP, when configured (shared/telemetry)
	"go.opentelemetry.io/auto/sdk",                        // (otel)
	"go.opentelemetry.io/proto/otlp/",                     // (otel: the OTLP wire types)
	"github.com/go-logr/",                                 // (otel: its internal logger)
	"github.com/cenkalti/backoff/",                        // (otel exporter: retries)
	"google.golang.org/grpc",                              // (otel: status types and the OTLP protos' service stubs; no gRPC server or client runs)
	"google.golang.org/genproto/",                         // (otel, via the OTLP protos)
	"github.com/grpc-ecosystem/grpc-gateway/",             // (otel, via the OTLP protos)
	"golang.org/x/text/",                                  // (otel: grpc's golang.org/x/net/idna)
	"github.com/aws/aws-sdk-go-v2",                        // Bedrock: SigV4 signer and the standard credential chain (edge/provider/bedrock)
	"github.com/aws/smithy-go",                            // (aws-sdk-go-v2)
	"cloud.google.com/go/auth",                            // Vertex AI: service-account OAuth tokens (edge/provider/vertex)
	"cloud.google.com/go/compute/metadata",                // (auth: application default credentials on Google Cloud)
	"github.com/googleapis/enterprise-certificate-proxy/", // (auth)
	"github.com/googleapis/gax-go/",                       // (auth)
}

// forbidden are packages of the project that must never reach the edge
// binary: test stand-ins and benchmark tools.
var forbidden = []string{
	"github.com/meridian-mesh/meridian/shared/testkit/",
	"github.com/meridian-mesh/meridian/scripts/",
	"github.com/meridian-mesh/meridian/edge/engine/enginetest",
	"github.com/meridian-mesh/meridian/edge/router/routertest",
	"github.com/meridian-mesh/meridian/control/",
	"github.com/nats-io/nats-server/", // the edge is a NATS client only
}

func TestEdgeDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}} {{len .CgoFiles}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, cgo, _ := strings.Cut(line, " ")
		if cgo != "0" {
			t.Errorf("%s uses cgo; the edge binary must stay cgo-free", pkg)
		}
		ok := false
		for _, p := range allowedModules {
			if strings.HasPrefix(pkg, p) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("edge binary imports %s, which is not in allowedModules", pkg)
		}
		for _, f := range forbidden {
			if strings.HasPrefix(pkg, f) {
				t.Errorf("edge binary imports %s, which must never ship in it", pkg)
			}
		}
	}
}
