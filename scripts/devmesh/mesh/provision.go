package mesh

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/meridian-mesh/meridian/shared/pki"
	"github.com/meridian-mesh/meridian/shared/testkit/tinygguf"
)

// gossipKey encrypts the dev mesh's gossip (development only).
var gossipKey = base64.StdEncoding.EncodeToString([]byte("devmesh-gossip-key-32-bytes!!!!!"))

// Credentials are what an edge needs to join the mesh: its certificate
// and key from the mesh's CA (for QUIC links), the CA, the NATS token
// that reads the routing table, and the gossip key.
type Credentials struct {
	CAFile, CertFile, KeyFile string
	// NATSToken and GossipKey reach the edge through its environment
	// (MERIDIAN_NATS_TOKEN, MERIDIAN_GOSSIP_KEYS), never its config file.
	NATSToken, GossipKey string
}

// Provision issues node id's credentials, once: a certificate from the
// development CA under dir/tls, plus the shared tokens. It is the one
// place an edge gets its credentials, so that it can become a join
// token redeemed with the control plane (`meridianctl node token`)
// without the rest of the launcher changing.
func Provision(dir, id string) (Credentials, error) {
	tls := filepath.Join(dir, "tls")
	c := Credentials{
		CAFile: filepath.Join(tls, pki.CACertFile), CertFile: filepath.Join(tls, id+".crt"), KeyFile: filepath.Join(tls, id+".key"),
		NATSToken: NATSToken, GossipKey: gossipKey,
	}
	if _, err := os.Stat(c.CertFile); err == nil {
		return c, nil
	}
	if err := pki.WriteNodeCert(tls, tls, id, []string{"127.0.0.1", "localhost"}, 365*24*time.Hour); err != nil {
		return c, fmt.Errorf("certificate for %s: %w", id, err)
	}
	return c, nil
}

// prepare writes what the mesh needs and an earlier run did not leave:
// the two tiny models, the development CA and the test GeoIP database.
func prepare(dir string) error {
	tls := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tls, 0o700); err != nil {
		return err
	}
	for name, variant := range map[string]string{"tiny.gguf": tinygguf.VariantChain, "tiny-repeat.gguf": tinygguf.VariantRepeat} {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); err == nil {
			continue
		}
		opts := tinygguf.DefaultOptions()
		opts.Variant = variant
		var b bytes.Buffer
		if err := tinygguf.Write(&b, opts); err != nil {
			return err
		}
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(tls, pki.CACertFile)); err != nil {
		if err := pki.WriteCA(tls, "Meridian devmesh CA", 365*24*time.Hour); err != nil {
			return err
		}
	}
	return writeGeoIP(filepath.Join(dir, "geo.mmdb"))
}

// GeoNets are documentation networks the test GeoIP database places in
// each region's city: a client whose X-Forwarded-For address lies in one
// is located there.
var GeoNets = map[string]string{"eu-west": "192.0.2.0/24", "us-east": "198.51.100.0/24", "ap-south": "203.0.113.0/24"}

// GeoIP returns a client address GeoIP places in region.
func GeoIP(region string) string {
	return strings.TrimSuffix(GeoNets[region], "0/24") + "10"
}

func writeGeoIP(path string) error {
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-City", RecordSize: 28, IncludeReservedNetworks: true})
	if err != nil {
		return err
	}
	for _, s := range Sites {
		_, n, err := net.ParseCIDR(GeoNets[s.Region])
		if err != nil {
			return err
		}
		rec := mmdbtype.Map{"location": mmdbtype.Map{
			"latitude": mmdbtype.Float64(s.Lat), "longitude": mmdbtype.Float64(s.Lon), "accuracy_radius": mmdbtype.Uint16(50),
		}}
		if err := tree.Insert(n, rec); err != nil {
			return err
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// edgeConfig is everything an edge is told: who and where it is, where
// to listen, its credentials and the control plane's address.
type edgeConfig struct {
	ID, Region, Listen, LogLevel string
	Link, Relay, Gossip          string
	Seeds, NATS                  []string
	Creds                        Credentials
	Dir, Ollama, GeoIP           string
}

func (c edgeConfig) yaml() string {
	q := func(s []string) string { return `["` + strings.Join(s, `", "`) + `"]` }
	return fmt.Sprintf(`# Written by scripts/devmesh/mesh: this edge's identity, region,
# credentials and the control plane's address. Routes, placements,
# providers and keys come from the control plane.
node_id: %[1]s
region: %[2]s
listen: %[3]s
log_level: %[4]s
log_format: text
drain_timeout: 5s

control:
  nats_urls: %[5]s
  token_env: MERIDIAN_NATS_TOKEN
  table_cache: %[6]s/table.pb

link:
  enabled: true
  listen: %[7]s
  ca_file: %[8]s
  cert_file: %[9]s
  key_file: %[10]s

gossip:
  enabled: true
  bind: %[11]s
  advertise: 127.0.0.1
  seeds: %[12]s
  cluster: devmesh
  profile: local
  keys_env: MERIDIAN_GOSSIP_KEYS
  # Peers reach this edge's links through the WAN relay in front of it.
  quic_addr: %[13]s

# The engine runs whatever the control plane places on this edge.
local:
  enabled: true
  binary: %[14]s
  data_dir: %[6]s/ollama
  num_thread: 1

# Clients on this machine may say where they are (a trusted header, or
# X-Forwarded-For looked up in the test GeoIP database).
geo:
  trusted_proxies: ["127.0.0.1/32"]
  forwarded_for: true
  geoip_database: %[15]s
`, c.ID, c.Region, c.Listen, c.LogLevel, q(c.NATS), c.Dir, c.Link, c.Creds.CAFile, c.Creds.CertFile, c.Creds.KeyFile,
		c.Gossip, q(c.Seeds), c.Relay, c.Ollama, c.GeoIP)
}
