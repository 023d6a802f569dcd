package pki

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteCAAndNodeCert(t *testing.T) {
	dir := t.TempDir()
	caDir, outDir := filepath.Join(dir, "ca"), filepath.Join(dir, "nodes")
	if err := WriteCA(caDir, "meridian-dev", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := WriteNodeCert(caDir, outDir, "edge-a", []string{"127.0.0.1", "edge-a.example"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{
		filepath.Join(caDir, "ca.key"):      0o600,
		filepath.Join(caDir, "ca.crt"):      0o644,
		filepath.Join(outDir, "edge-a.key"): 0o600,
		filepath.Join(outDir, "edge-a.crt"): 0o644,
	} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", name, got, want)
		}
	}
	pool, err := LoadPool(filepath.Join(caDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := LoadCertFile(filepath.Join(outDir, "edge-a.crt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "edge-a", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("verify for %v: %v", usage, err)
		}
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("IP SAN: %v", err)
	}
	if err := leaf.VerifyHostname("edge-b"); err == nil {
		t.Error("certificate for edge-a verified as edge-b")
	}
	if leaf.Subject.CommonName != "edge-a" {
		t.Errorf("CN %q", leaf.Subject.CommonName)
	}
}

func TestRejectsBadNodeID(t *testing.T) {
	dir := t.TempDir()
	if err := WriteCA(dir, "ca", time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "../x", "Edge", "a/b", "..", "a b"} {
		if err := WriteNodeCert(dir, dir, id, nil, time.Hour); !errors.Is(err, ErrBadNodeID) {
			t.Errorf("%q: err %v, want ErrBadNodeID", id, err)
		}
	}
}

func TestOtherCARejected(t *testing.T) {
	a, err := NewCA("a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewCA("b", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Issue("edge-a", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: a.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Fatal("a certificate from another CA verified")
	}
}
