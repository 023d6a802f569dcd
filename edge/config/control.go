package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
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
	// by one of them. Required with a control plane; list two while
	// rotating the key. TablePublicKey is the one-key shorthand.
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
	switch {
	case c.User != "" && c.Password == "":
		return bad("password", "user %q needs a password (password_env)", c.User)
	case c.User == "" && c.Token == "":
		return bad("token", "the control plane's NATS requires authentication: set user and password_env, or token_env")
	}
	if len(c.Keys()) == 0 {
		return bad("table_public_key", "is required with a control plane: the edge applies only tables the control plane signed (print the key with `meridianctl table-key`)")
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
