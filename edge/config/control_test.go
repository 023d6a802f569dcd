package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/shared/table"
)

func TestControlConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	os.WriteFile(path, []byte(`
node_id: edge-1
control:
  nats_urls: ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
  user: meridian
  password_env: TEST_NATS_PASSWORD
  table_cache: `+dir+`/table.pb
  table_public_key: ed25519:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=
`), 0o600)
	env := map[string]string{"TEST_NATS_PASSWORD": "hunter2-but-longer"}
	c, err := Load(path, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !c.Control.Enabled() || c.Control.Password.Reveal() != "hunter2-but-longer" || c.Control.CachePath("edge-1") != dir+"/table.pb" {
		t.Fatalf("control: %+v", c.Control)
	}
	if s := c.Control.Password.String(); strings.Contains(s, "hunter2") {
		t.Fatal("the password prints")
	}

	delete(env, "TEST_NATS_PASSWORD")
	if _, err := Load(path, func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), "control.password_env") {
		t.Fatalf("missing password: %v", err)
	}

	for name, edit := range map[string]func(*Control){
		"no auth":          func(c *Control) { c.User, c.Password, c.Token = "", "", "" },
		"creds in url":     func(c *Control) { c.NATSURLs = []string{"nats://u:secretpw@h:4222"} },
		"bad scheme":       func(c *Control) { c.NATSURLs = []string{"http://h:4222"} },
		"tiny table cap":   func(c *Control) { c.MaxTableBytes = 10 },
		"no stale horizon": func(c *Control) { c.StaleAfter = 0 },
		"no table key":     func(c *Control) { c.TablePublicKey = "" },
		"bad table key":    func(c *Control) { c.TablePublicKey = "ed25519:c2hvcnQ=" },
		"rsa table key":    func(c *Control) { c.TablePublicKeys = []string{"rsa:AAAA"} },
	} {
		cfg := DefaultConfig()
		cfg.Control.NATSURLs = []string{"nats://127.0.0.1:4222"}
		cfg.Control.TablePublicKey = "ed25519:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
		cfg.Control.Token = table.Secret("token-0123456789")
		edit(&cfg.Control)
		err := cfg.Validate()
		var fe *table.FieldError
		if err == nil || !asFieldError(err, &fe) || !strings.HasPrefix(fe.Field, "control.") {
			t.Errorf("%s: %v", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "secretpw") {
			t.Errorf("%s: the error echoes a credential", name)
		}
	}
}

func asFieldError(err error, fe **table.FieldError) bool {
	e, ok := err.(*table.FieldError)
	*fe = e
	return ok
}

// Without control.api_url the table key must be pinned; with it, the
// join delivers it.
func TestControlTableKeyPinnedOrJoined(t *testing.T) {
	c := DefaultControl()
	c.NATSURLs, c.Token = []string{"nats://127.0.0.1:4222"}, "t0k3n-0123456789"
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "control.table_public_key") {
		t.Fatalf("no pinned key, no api_url: %v", err)
	}
	c.APIURL = "https://10.0.0.1:7400"
	if err := c.validate(); err != nil {
		t.Fatalf("keys from the join: %v", err)
	}
	c.TablePublicKey = "ed25519:short"
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "table_public_keys[0]") {
		t.Fatalf("a bad pinned key beside api_url: %v", err)
	}
}

func TestControlAPIURLNeedsTLSBeyondLoopback(t *testing.T) {
	for url, ok := range map[string]bool{
		"https://10.0.0.1:7400": true, "http://127.0.0.1:7400": true, "http://localhost:7400": true,
		"http://10.0.0.1:7400": false, "https://u:p@10.0.0.1:7400": false, "ftp://x": false,
	} {
		c := DefaultControl()
		c.NATSURLs, c.APIURL = []string{"nats://127.0.0.1:4222"}, url
		if err := c.validate(); (err == nil) != ok {
			t.Errorf("api_url %q: err %v, want ok=%v", url, err, ok)
		}
	}
}
