package webhook

import (
	"errors"
	"net/netip"
	"testing"
)

func TestCheckURL(t *testing.T) {
	a, err := Compile([]string{"hooks.example.com", "*.example.org", "203.0.113.0/24", "127.0.0.1/32"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		url string
		ok  bool
	}{
		{"https://hooks.example.com/x", true},
		{"https://HOOKS.example.com:8443/x", true},
		{"https://a.b.example.org/x", true},
		{"https://example.org/x", false}, // the wildcard is for subdomains
		{"https://evil.example.com/x", false},
		{"https://hooks.example.com.evil.net/x", false},
		{"http://203.0.113.9/x", true},
		{"http://203.0.114.9/x", false},
		{"http://127.0.0.1:9/x", true},
		{"http://127.0.0.2/x", false},
		{"http://10.0.0.1/x", false},
		{"http://169.254.169.254/latest/meta-data", false},
		{"http://[::1]/x", false},
		{"http://[::ffff:127.0.0.1]/x", true}, // the mapped form is the same address
		{"ftp://hooks.example.com/x", false},
		{"https://user:pw@hooks.example.com/x", false},
		{"hooks.example.com/x", false},
		{"", false},
	} {
		_, err := a.CheckURL(c.url)
		if (err == nil) != c.ok {
			t.Errorf("%q: err %v, want ok=%v", c.url, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrRefused) {
			t.Errorf("%q: %v does not wrap ErrRefused", c.url, err)
		}
	}
	if _, err := (Allowlist{}).CheckURL("https://hooks.example.com/"); err == nil {
		t.Fatal("the empty list allowed a URL")
	}
}

func TestCheckAddr(t *testing.T) {
	a, _ := Compile([]string{"hooks.example.com", "10.1.0.0/16"})
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"93.184.216.34", true}, {"2606:4700::1", true},
		{"127.0.0.1", false}, {"::1", false}, {"10.0.0.1", false}, {"10.1.2.3", true},
		{"169.254.169.254", false}, {"fe80::1", false}, {"0.0.0.0", false}, {"100.64.0.1", false},
		{"192.168.1.1", false}, {"fd00::1", false}, {"224.0.0.1", false}, {"::ffff:10.1.0.5", true},
	} {
		err := a.CheckAddr(netip.MustParseAddr(c.addr))
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", c.addr, err, c.ok)
		}
	}
}

func TestValidEntry(t *testing.T) {
	for _, e := range []string{"hooks.example.com", "*.example.com", "10.0.0.0/8", "::1/128", "localhost"} {
		if !ValidEntry(e) {
			t.Errorf("%q refused", e)
		}
	}
	for _, e := range []string{"", "http://x.com", "10.0.0.1", "*.", "a..b", "-a.com", "x.com/path", "*.*.com", "a b"} {
		if ValidEntry(e) {
			t.Errorf("%q accepted", e)
		}
	}
}

// FuzzCheckURL: any callback URL a client sends is either refused with
// ErrRefused or names a host the list allows, never a special address
// the list does not name.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{"https://hooks.example.com/x", "http://127.0.0.1:9/x", "http://[::ffff:10.0.0.1]/",
		"http://0x7f.1/", "http://hooks.example.com@10.0.0.1/", "https://a.example.org./", "http://[fe80::1%25eth0]/", "//x"} {
		f.Add(s)
	}
	a, _ := Compile([]string{"hooks.example.com", "*.example.org", "203.0.113.0/24"})
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := a.CheckURL(raw)
		if err != nil {
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("%q: %v does not wrap ErrRefused", raw, err)
			}
			return
		}
		if addr, err := netip.ParseAddr(u.Hostname()); err == nil && (Special(addr) || !a.inNets(addr)) {
			t.Fatalf("%q allowed %s", raw, addr)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.User != nil {
			t.Fatalf("%q allowed", raw)
		}
	})
}
