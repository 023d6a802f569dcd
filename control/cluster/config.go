package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/control/seal"
)

// Peer is one voter in a bootstrap list.
type Peer struct {
	// ID is the peer's Raft server ID, the UUID in its data folder.
	ID string
	// Addr is the peer's Raft address, host:port.
	Addr string
	// APIAddr, when known, is the peer's API base URL; the first leader
	// records it, so every member's address is listed before it ever
	// leads.
	APIAddr string
	// Name, when known, is the peer's node name.
	Name string
}

// ParsePeer reads "id=host:port".
func ParsePeer(s string) (Peer, error) {
	id, addr, ok := strings.Cut(s, "=")
	if !ok || id == "" || addr == "" {
		return Peer{}, fmt.Errorf("peer %q: want id=host:port", s)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return Peer{}, fmt.Errorf("peer %q: %w", s, err)
	}
	return Peer{ID: id, Addr: addr}, nil
}

// Config configures a control node's Raft member.
type Config struct {
	// DataDir holds the node ID, the write-ahead log and snapshots.
	DataDir string
	// NodeName is a human name for logs and the cluster listing.
	NodeName string
	// NodeID is used only when DataDir holds no ID yet; empty means a
	// random UUID. Once stored, the ID never changes.
	NodeID string
	// RaftAddr is the TCP address Raft listens on, host:port.
	RaftAddr string
	// RaftAdvertise is the address other nodes dial; empty means RaftAddr.
	RaftAdvertise string
	// RaftTLS, when set, runs Raft over mutual TLS (tls.go). Without it
	// Raft is plain TCP, which Validate allows only on loopback or with
	// RaftInsecure.
	RaftTLS *RaftTLS
	// RaftInsecure allows plain-TCP Raft on a non-loopback address:
	// anyone who reaches the port can then rewrite the fleet's state.
	// Development only.
	RaftInsecure bool
	// APIAddr is this node's management API base URL
	// ("http://host:port"), which followers forward writes to.
	APIAddr string

	// Bootstrap starts a new single-node cluster when DataDir holds no
	// Raft state.
	Bootstrap bool
	// Peers starts a new cluster of these voters when DataDir holds no
	// Raft state. Every voter must be given the same list, including
	// itself.
	Peers []Peer

	// HeartbeatTimeout is how long a follower goes without hearing from
	// the leader before it stands for election; raft waits a random time
	// between it and twice it (the jitter that keeps followers from
	// standing together), and the leader heartbeats every tenth of it.
	// DefaultConfig sets 150 ms (raft's default is 1 s). A survivor
	// refuses votes while it still knows the dead leader, so failover
	// waits for the later of two followers' timeouts, about twice this:
	// ~350 ms on a LAN, where heartbeats come every 15–30 ms. With 40 ms
	// of one-way delay heartbeats come every ~100 ms (a round trip plus
	// the interval), leaving a stall of ~40 ms before a spurious
	// election: raise it on slower links. Zero keeps raft's.
	HeartbeatTimeout time.Duration
	// ElectionTimeout is how long a candidate waits before it stands
	// again, randomised the same way. DefaultConfig sets 300 ms, twice the
	// heartbeat timeout: a follower whose pre-vote was refused (the other
	// survivor still knew the old leader) then retries only after the
	// other has had time to time out and win, even with an 80 ms round
	// trip, instead of standing against it and splitting the vote. Zero
	// keeps raft's 1 s.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader keeps leading without a
	// quorum's contact. DefaultConfig sets 150 ms, at most the heartbeat
	// timeout as raft requires, so a cut-off leader steps down about when
	// the others elect a new one, and above a heartbeat round trip with
	// 40 ms of one-way delay plus the interval (~110 ms), so a slow link
	// does not depose it. Zero keeps raft's 500 ms.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout bounds how long a follower waits to learn the commit
	// index when no new entries come; zero keeps raft's 50 ms.
	CommitTimeout time.Duration
	// SnapshotThreshold is how many log entries trigger a snapshot; zero
	// keeps raft's 8192.
	SnapshotThreshold uint64
	// SnapshotInterval is how often raft checks the threshold; zero keeps
	// raft's 120 s.
	SnapshotInterval time.Duration
	// TrailingLogs is how many entries a snapshot leaves in the log;
	// zero keeps raft's 10240.
	TrailingLogs uint64

	// KEK seals the key material this node creates in the replicated
	// state (the table-signing key). Nil stores it in the clear, for
	// development only. Every control node of a cluster needs the same.
	KEK *seal.KEK

	// ApplyTimeout bounds how long one command waits to be enqueued.
	ApplyTimeout time.Duration
	// Logger receives the node's and raft's logs.
	Logger *slog.Logger
	// OnApply is passed to the FSM: called once per applied command.
	OnApply func(index uint64, requestID string)
}

// DefaultConfig returns a Config with every default filled in; DataDir
// must still be set.
func DefaultConfig() Config {
	return Config{
		NodeName:           "control",
		RaftAddr:           "127.0.0.1:7401",
		APIAddr:            "http://127.0.0.1:7400",
		HeartbeatTimeout:   150 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond,
		ApplyTimeout:       10 * time.Second,
		Logger:             slog.Default(),
	}
}

// Validate checks the config.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if _, _, err := net.SplitHostPort(c.RaftAddr); err != nil {
		errs = append(errs, fmt.Errorf("raft addr %q: %w", c.RaftAddr, err))
	}
	if c.RaftTLS == nil && !c.RaftInsecure && (!loopbackOnly(c.RaftAddr) || c.RaftAdvertise != "" && !loopbackOnly(c.RaftAdvertise)) {
		errs = append(errs, ErrInsecureRaft)
	}
	if t := c.RaftTLS; t != nil && (t.CAFile == "" || t.CertFile == "" || t.KeyFile == "") {
		errs = append(errs, errors.New("raft tls needs a CA, a certificate and a key"))
	}
	if c.Bootstrap && len(c.Peers) > 0 {
		errs = append(errs, errors.New("give bootstrap or peers, not both"))
	}
	seen := map[string]bool{}
	for _, p := range c.Peers {
		if seen[p.ID] {
			errs = append(errs, fmt.Errorf("peer %s listed twice", p.ID))
		}
		seen[p.ID] = true
	}
	if c.ApplyTimeout <= 0 {
		errs = append(errs, errors.New("apply timeout must be positive"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("logger is required"))
	}
	return errors.Join(errs...)
}
