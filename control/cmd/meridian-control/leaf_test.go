package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/control/distribution"
)

const testTableKey = "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

func TestLeafFlagsAreValidated(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	withPass := env(map[string]string{"MERIDIAN_NATS_LEAF_PASSWORD": "p"})
	for _, tc := range []struct {
		name string
		args []string
		env  func(string) string
		want string // "" means valid up to the start
	}{
		{"no hub", []string{"-table-public-key", testTableKey}, withPass, "-hub:"},
		{"hub as a URL", []string{"-hub", "nats://10.0.0.1:7422", "-table-public-key", testTableKey}, withPass, "is not host:port"},
		{"remote hub without CA", []string{"-hub", "10.0.0.1:7422", "-table-public-key", testTableKey}, withPass, "-hub-tls-ca"},
		{"no table key", []string{"-hub", "127.0.0.1:7422"}, withPass, "-table-public-key: required"},
		{"bad table key", []string{"-hub", "127.0.0.1:7422", "-table-public-key", "ed25519:nope"}, withPass, "-table-public-key"},
		{"no leaf credential", []string{"-hub", "127.0.0.1:7422", "-table-public-key", testTableKey}, env(nil), "MERIDIAN_NATS_LEAF_PASSWORD"},
		{"cert without key", []string{"-hub", "127.0.0.1:7422", "-table-public-key", testTableKey, "-nats-tls-cert", "c.pem"}, withPass, "go together"},
		{"ping too fast", []string{"-hub", "127.0.0.1:7422", "-table-public-key", testTableKey, "-ping-interval", "1ms"}, withPass, "-ping-interval"},
	} {
		var out bytes.Buffer
		err := leafMain(tc.args, tc.env, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one naming %q", tc.name, err, tc.want)
		}
	}
	var out bytes.Buffer
	if err := leafMain([]string{"-help"}, env(nil), &out); err != nil {
		t.Fatalf("-help: %v", err)
	}
	for _, want := range []string{"MERIDIAN_NATS_LEAF_PASSWORD", "-hub", "-table-public-key", "-nats-leaf-listen"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("-help does not mention %s:\n%s", want, out.String())
		}
	}
}

func TestLeafListenerNeedsTheLeafCredential(t *testing.T) {
	n := distribution.DefaultConfig()
	n.Token, n.LeafListen = "t", "127.0.0.1:7422"
	if err := validateNATS(&n); err == nil || !strings.Contains(err.Error(), "MERIDIAN_NATS_LEAF_PASSWORD") {
		t.Fatalf("validateNATS = %v, want the leaf credential asked for", err)
	}
	n.LeafPassword = "p"
	if err := validateNATS(&n); err != nil {
		t.Fatal(err)
	}
}
