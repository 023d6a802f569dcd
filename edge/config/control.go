package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// Control connects the edge to the control plane: the NATS servers the
// routing table arrives on (the control nodes' embedded servers, or an
// existing NATS cluster). Off unless nats_urls is set; the edge then
// serves its static table alone.
type Control struct {
	// NATSURLs are NATS servers to start from, "nats://host:port" or
	// "tls://host:port"; the edge learns the rest of the cluster from
	// them. They must not carry credentials.
	NATSURLs []string `yaml:"nats_urls"`
	// User and Password authenticate to NATS; or Token does.
	User     string       `yaml:"user"`
	Password table.Secret `yaml:"password"`
	// PasswordEnv names an environment variable holding the password; it
	// wins over Password.
	PasswordEnv string       `yaml:"password_env"`
	Token       table.Secret `yaml:"token"`
	// TokenEnv names an environment variable holding the token; it wins
	// over Token.
	TokenEnv string `yaml:"token_env"`
	// TLSCAFile is the CA certificate (PEM) NATS servers are checked
	// against; setting it turns TLS on.
	TLSCAFile string `yaml:"tls_ca_file"`
	// TablePublicKeys are the control plane's table-signing public keys,
	// "ed25519:<base64>" (`meridianctl table-key` prints it): the edge
	// applies only tables, deltas, heartbeats and snapshot replies signed
	// by one of them. Required with a control plane unless APIURL is
	// set: a joined edge then takes them from its node certificate's
	// answer, refreshed at each renewal. Pinned keys are the only ones
	// used when given; list two while rotating the key. TablePublicKey
	// is the one-key shorthand.
	TablePublicKeys []string `yaml:"table_public_keys"`
	TablePublicKey  string   `yaml:"table_public_key"`
	// ClusterID, when set, is the only control-plane cluster whose tables
	// the edge accepts; empty trusts the cluster of the first table the
	// edge applies (kept with the table on disk), then only that one.
	ClusterID string `yaml:"cluster_id"`
	// SecretEnvPrefix and SecretsDir bound the secret_refs this edge
	// resolves from the control plane's tables: environment variables
	// starting with the prefix, files in the directory (symlinks may not
	// lead out). Defaults MERIDIAN_SECRET_ and /etc/meridian/secrets.
	SecretEnvPrefix string `yaml:"secret_env_prefix"`
	SecretsDir      string `yaml:"secrets_dir"`
	// TableCache is where the last good table is kept, so the edge can
	// start while the control plane is down. Default:
	// "<user cache dir>/meridian/<node_id>/table.pb".
	TableCache string `yaml:"table_cache"`
	// MaxTableBytes caps a table or update, bytes. Default 4 MiB.
	MaxTableBytes int `yaml:"max_table_bytes"`
	// StaleAfter is how many heartbeat intervals (1 s from the leader)
	// may pass without news before the table counts as stale. Default 3.
	StaleAfter int `yaml:"stale_after"`
	// ReportInterval is how often the edge reports its revision to the
	// control plane, besides after each change. Default 10s.
	ReportInterval time.Duration `yaml:"report_interval"`

	// APIURL is a control node's management API, "http(s)://host:port";
	// setting it turns on the fleet identity (edge/node/join.go): the
	// edge joins with JoinToken once, receives its node certificate and
	// registers its own NATS key, keeps them in DataDir, and renews the
	// certificate at half its life. NATS then authenticates with that
	// key (user, password and token are not needed) and links use that
	// certificate (link.ca_file, cert_file and key_file are not needed).
	// Env MERIDIAN_CONTROL_API_URL.
	APIURL string `yaml:"api_url"`
	// APICAFile is the CA (PEM) an https:// APIURL is checked against;
	// empty means the system roots.
	APICAFile string `yaml:"api_ca_file"`
	// JoinToken is the one-time token from `meridianctl node token`,
	// needed only until the edge has joined. Env MERIDIAN_JOIN_TOKEN.
	JoinToken table.Secret `yaml:"join_token"`
	// JoinTokenEnv names an environment variable holding the join token;
	// it wins over JoinToken.
	JoinTokenEnv string `yaml:"join_token_env"`
	// DataDir keeps the edge's credentials (node key and certificate,
	// the cluster CA, its NATS seed), mode 0700. Default: the table
	// cache's folder, "<user cache dir>/meridian/<node_id>/identity".
	DataDir string `yaml:"data_dir"`
}

// Identity reports whether the edge joins the fleet for its certificate
// and NATS identity.
func (c *Control) Identity() bool { return c.APIURL != "" }

// IdentityDir returns the folder the edge's credentials are kept in.
func (c *Control) IdentityDir(nodeID string) string {
	if c.DataDir != "" {
		return c.DataDir
	}
	return filepath.Join(filepath.Dir(c.CachePath(nodeID)), "identity")
}

// DefaultControl returns the control settings used where nothing is set.
func DefaultControl() Control {
	return Control{MaxTableBytes: 4 << 20, StaleAfter: 3, ReportInterval: 10 * time.Second}
}

// Enabled reports whether the edge follows a control plane.
func (c *Control) Enabled() bool { return len(c.NATSURLs) > 0 }

// CachePath returns the table cache's path for a node.
func (c *Control) CachePath(nodeID string) string {
	if c.TableCache != "" {
		return c.TableCache
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "meridian", nodeID, "table.pb")
}

// TLSConfig returns the client TLS config, nil when TLS is off.
func (c *Control) TLSConfig() (*tls.Config, error) {
	if c.TLSCAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(c.TLSCAFile)
	if err != nil {
		return nil, &table.FieldError{Field: "control.tls_ca_file", Msg: err.Error()}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, &table.FieldError{Field: "control.tls_ca_file", Msg: "holds no PEM certificate"}
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Keys returns the pinned table public keys, TablePublicKey first.
func (c *Control) Keys() []string {
	var out []string
	if c.TablePublicKey != "" {
		out = append(out, c.TablePublicKey)
	}
	return append(out, c.TablePublicKeys...)
}

func (c *Control) validate() error {
	bad := func(field, format string, args ...any) error {
		return &table.FieldError{Field: "control." + field, Msg: fmt.Sprintf(format, args...)}
	}
	if !c.Enabled() {
		return nil
	}
	for i, raw := range c.NATSURLs {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls") {
			return bad(fmt.Sprintf("nats_urls[%d]", i), `must look like "nats://host:port" or "tls://host:port"`)
		}
		if u.User != nil {
			// Never echo it: it holds a credential.
			return bad(fmt.Sprintf("nats_urls[%d]", i), "must not carry credentials; use user with password_env, or token_env")
		}
	}
	if c.APIURL != "" {
		u, err := url.Parse(c.APIURL)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil {
			return bad("api_url", `must look like "https://host:port" (or http:// on loopback), without credentials`)
		}
		if ip := net.ParseIP(u.Hostname()); u.Scheme == "http" && u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			// The join token and certificate requests would cross the
			// network in the clear.
			return bad("api_url", "must be https:// unless it is a loopback address")
		}
	}
	switch {
	case c.User != "" && c.Password == "":
		return bad("password", "user %q needs a password (password_env)", c.User)
	case c.User == "" && c.Token == "" && c.APIURL == "":
		return bad("token", "the control plane's NATS requires authentication: set user and password_env, or token_env")
	}
	if len(c.Keys()) == 0 && c.APIURL == "" {
		return bad("table_public_key", "is required with a control plane unless control.api_url is set (the keys then come with the node certificate): the edge applies only tables the control plane signed (print the key with `meridianctl table-key`)")
	}
	for i, k := range c.Keys() {
		if _, err := tablewire.ParsePublicKey(k); err != nil {
			return bad(fmt.Sprintf("table_public_keys[%d]", i), "%v", err)
		}
	}
	if c.MaxTableBytes < 1024 {
		return bad("max_table_bytes", "must be at least 1024")
	}
	if c.StaleAfter < 1 {
		return bad("stale_after", "must be at least 1")
	}
	if c.ReportInterval <= 0 {
		return bad("report_interval", "must be positive")
	}
	return nil
}

// resolveJoinToken reads the join token from the variable the config
// names. Unlike the other secrets it may be unset: an edge that joined
// needs it no more.
func resolveJoinToken(c *Control, getenv func(string) string) {
	if c.JoinTokenEnv != "" && getenv != nil {
		if v := strings.TrimSpace(getenv(c.JoinTokenEnv)); v != "" {
			c.JoinToken = table.Secret(v)
		}
	}
}

// resolveControlSecrets reads the NATS password or token from the
// environment variables the config names.
func resolveControlSecrets(c *Control, getenv func(string) string) error {
	for _, s := range []struct {
		field, name string
		dst         *table.Secret
	}{{"control.password_env", c.PasswordEnv, &c.Password}, {"control.token_env", c.TokenEnv, &c.Token}} {
		if s.name == "" {
			continue
		}
		v := ""
		if getenv != nil {
			v = strings.TrimSpace(getenv(s.name))
		}
		if v == "" {
			return &table.FieldError{Field: s.field, Msg: fmt.Sprintf("environment variable %s is not set", s.name)}
		}
		*s.dst = table.Secret(v)
	}
	return nil
}
