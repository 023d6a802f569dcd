package mesh

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/meridian-mesh/meridian/control/seal"
	"github.com/meridian-mesh/meridian/shared/testkit/tinygguf"
)

// gossipKey encrypts the dev mesh's gossip (development only).
var gossipKey = base64.StdEncoding.EncodeToString([]byte("devmesh-gossip-key-32-bytes!!!!!"))

// Credentials are what an edge needs to join the mesh, the way a
// production fleet is joined (README "Security model"): a one-time join
// token from `meridianctl node token`, redeemed by the edge itself for
// its node certificate and its own NATS identity, and the table-signing
// key it pins. Only the gossip key is still shared.
type Credentials struct {
	// JoinToken is empty when the edge joined on an earlier run and
	// keeps its credentials in IdentityDir.
	JoinToken   string
	IdentityDir string
	// TableKey and ClusterID are what `meridianctl table-key` prints.
	TableKey, ClusterID string
	// GossipKey reaches the edge through its environment
	// (MERIDIAN_GOSSIP_KEYS), never its config file.
	GossipKey string
}

// Provision gives node id in region its credentials: a join token unless
// the edge joined before (its identity folder holds a certificate), and
// the control plane's table key. It is the one place an edge gets its
// credentials.
func (m *Mesh) Provision(ctx context.Context, id, region, identityDir string) (Credentials, error) {
	c := Credentials{IdentityDir: identityDir, GossipKey: gossipKey}
	if err := m.fetchTableKey(ctx); err != nil {
		return c, err
	}
	c.TableKey, c.ClusterID = m.tableKey, m.clusterID
	if entries, _ := os.ReadDir(identityDir); len(entries) > 0 {
		return c, nil
	}
	out, err := m.Ctl(ctx, "-json", "node", "token", id, "--region", region, "--ttl", "10m")
	if err != nil {
		return c, err
	}
	var t struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(out), &t); err != nil || t.Token == "" {
		return c, fmt.Errorf("meridianctl node token %s: %q: %v", id, out, err)
	}
	c.JoinToken = t.Token
	return c, nil
}

// fetchTableKey learns, once, the table key and cluster ID that edges
// and leaves pin.
func (m *Mesh) fetchTableKey(ctx context.Context) error {
	if m.tableKey != "" {
		return nil
	}
	out, err := m.Ctl(ctx, "-json", "table-key")
	if err != nil {
		return err
	}
	var k struct {
		PublicKey string `json:"public_key"`
		ClusterID string `json:"cluster_id"`
	}
	if err := json.Unmarshal([]byte(out), &k); err != nil || k.PublicKey == "" {
		return fmt.Errorf("meridianctl table-key: %q: %v", out, err)
	}
	m.tableKey, m.clusterID = k.PublicKey, k.ClusterID
	return nil
}

// prepare writes what the mesh needs and an earlier run did not leave:
// the two tiny models, the development CA and the test GeoIP database.
func prepare(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
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
	// The key-encryption key that seals the cluster CA and the
	// table-signing key in the control plane's state.
	if _, err := os.Stat(filepath.Join(dir, kekFile)); err != nil {
		if err := seal.Generate(filepath.Join(dir, kekFile)); err != nil {
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

// kekFile is the dev mesh's key-encryption key, under its folder.
const kekFile = "kek.hex"

// edgeConfig is everything an edge is told: who and where it is, where
// to listen, its credentials and the control plane's address.
type edgeConfig struct {
	ID, Region, Listen, LogLevel string
	Link, Relay, Gossip          string
	Seeds, NATS                  []string
	ControlAPI                   string
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

# The edge joins with the token in MERIDIAN_JOIN_TOKEN (first start
# only), then authenticates to NATS and its peers with what it received,
# and applies only tables signed by the pinned key.
control:
  nats_urls: %[5]s
  api_url: %[8]s
  join_token_env: MERIDIAN_JOIN_TOKEN
  data_dir: %[9]s
  table_public_key: %[10]s
  cluster_id: %[16]s
  table_cache: %[6]s/table.pb

link:
  enabled: true
  listen: %[7]s

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
`, c.ID, c.Region, c.Listen, c.LogLevel, q(c.NATS), c.Dir, c.Link, c.ControlAPI, c.Creds.IdentityDir, c.Creds.TableKey,
		c.Gossip, q(c.Seeds), c.Relay, c.Ollama, c.GeoIP, c.Creds.ClusterID)
}
