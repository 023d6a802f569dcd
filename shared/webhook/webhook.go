// Package webhook decides where a tenant's async jobs may call back:
// the tenant's allow-list of host names and CIDRs (Tenant.webhook_allow),
// checked when a callback URL is submitted and again for every address
// a call connects to, so that a request can never make Meridian call an
// address of its choosing. The control plane uses it to validate the
// list; edges use it to check URLs and addresses.
//
// Private, loopback, link-local, unspecified and multicast addresses are
// refused unless a CIDR of the list contains them, whatever host name
// led there: a public name that resolves to 127.0.0.1 at call time (DNS
// rebinding) is refused at connect time.
//
// The package must never resolve a name or open a connection itself.
package webhook

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// ErrRefused wraps every reason a URL or address is not allowed.
var ErrRefused = errors.New("webhook address not allowed")

// MaxURL bounds a callback URL, bytes.
const MaxURL = 2048

// ValidEntry reports whether s can be an allow-list entry: a CIDR
// ("203.0.113.0/24", "::1/128"), a host name ("hooks.example.com") or a
// wildcard for its subdomains ("*.example.com").
func ValidEntry(s string) bool {
	if _, err := netip.ParsePrefix(s); err == nil {
		return true
	}
	return validHost(strings.TrimPrefix(s, "*."))
}

func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return false // an address belongs in a CIDR
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Allowlist is a compiled allow-list. The zero value allows nothing.
type Allowlist struct {
	hosts []string // exact, lower case
	wild  []string // ".example.com", lower case
	nets  []netip.Prefix
}

// Compile compiles entries, refusing any that is not ValidEntry.
func Compile(entries []string) (Allowlist, error) {
	var a Allowlist
	for _, e := range entries {
		if p, err := netip.ParsePrefix(e); err == nil {
			a.nets = append(a.nets, p.Masked())
			continue
		}
		if !ValidEntry(e) {
			return Allowlist{}, fmt.Errorf("webhook: %q is not a host name, *.domain or CIDR", e)
		}
		if d, ok := strings.CutPrefix(e, "*."); ok {
			a.wild = append(a.wild, "."+strings.ToLower(d))
		} else {
			a.hosts = append(a.hosts, strings.ToLower(e))
		}
	}
	return a, nil
}

// Empty reports whether the list allows nothing.
func (a Allowlist) Empty() bool { return len(a.hosts)+len(a.wild)+len(a.nets) == 0 }

// CheckURL checks a callback URL at submission: http or https, no user
// information, and a host the list names (a host name matching an
// entry, or an address inside one of its CIDRs; a special address only
// inside a CIDR). It returns the parsed URL.
func (a Allowlist) CheckURL(raw string) (*url.URL, error) {
	if len(raw) > MaxURL {
		return nil, fmt.Errorf("%w: the URL is longer than %d bytes", ErrRefused, MaxURL)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("%w: it must be an absolute http or https URL", ErrRefused)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: it must not carry user information", ErrRefused)
	}
	host := strings.ToLower(u.Hostname())
	if addr, err := netip.ParseAddr(host); err == nil {
		if err := a.CheckAddr(addr); err != nil {
			return nil, err
		}
		if !a.inNets(addr) {
			return nil, fmt.Errorf("%w: address %s is in no CIDR of the tenant's webhook_allow", ErrRefused, addr)
		}
		return u, nil
	}
	if !a.hostAllowed(host) {
		return nil, fmt.Errorf("%w: host %q is not in the tenant's webhook_allow", ErrRefused, host)
	}
	return u, nil
}

func (a Allowlist) hostAllowed(host string) bool {
	host = strings.TrimSuffix(host, ".")
	for _, h := range a.hosts {
		if host == h {
			return true
		}
	}
	for _, w := range a.wild {
		if strings.HasSuffix(host, w) && len(host) > len(w) {
			return true
		}
	}
	return false
}

func (a Allowlist) inNets(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range a.nets {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// CheckAddr checks an address a call is about to connect to: a special
// address (private, loopback, link-local, unspecified, multicast, or
// the shared CGNAT range) only when a CIDR of the list contains it.
func (a Allowlist) CheckAddr(addr netip.Addr) error {
	addr = addr.Unmap()
	if Special(addr) && !a.inNets(addr) {
		return fmt.Errorf("%w: %s is a private, loopback or link-local address the tenant's webhook_allow does not name", ErrRefused, addr)
	}
	return nil
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Special reports whether addr is one a callback may reach only when a
// tenant names it: private, loopback, link-local, unspecified,
// multicast or CGNAT.
func Special(addr netip.Addr) bool {
	addr = addr.Unmap()
	return !addr.IsValid() || addr.IsPrivate() || addr.IsLoopback() || addr.IsLinkLocalUnicast() ||
		addr.IsLinkLocalMulticast() || addr.IsInterfaceLocalMulticast() || addr.IsMulticast() ||
		addr.IsUnspecified() || cgnat.Contains(addr)
}
