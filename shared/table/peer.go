package table

import (
	"errors"
	"net"
	"net/url"
	"strings"
)

// KindPeer is another Meridian edge, reached over a QUIC link (edge/link).
// Its base URL names the peer's link address and node ID:
//
//	meridian-link://10.0.2.7:7443/edge-fra-1
//
// The node ID is the name in the peer's certificate, which the link
// checks; the address may be an IP or a host name. A peer needs no API
// key: links are mutual TLS.
const KindPeer = "peer"

// PeerScheme is the URL scheme of a peer's base URL.
const PeerScheme = "meridian-link"

func init() { knownKinds = append(knownKinds, KindPeer) }

// ParsePeerURL splits a peer's base URL into its node ID and host:port.
func ParsePeerURL(raw string) (node, addr string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", errors.New("is not a valid URL")
	}
	if u.Scheme != PeerScheme {
		return "", "", errors.New(`must look like "meridian-link://host:port/node-id"`)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", errors.New(`must be just "meridian-link://host:port/node-id"`)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" || port == "" {
		return "", "", errors.New("needs a host and a port")
	}
	node = strings.TrimPrefix(u.Path, "/")
	if node == "" || strings.Contains(node, "/") {
		return "", "", errors.New(`must end with the peer's node ID: "meridian-link://host:port/node-id"`)
	}
	return node, u.Host, nil
}
