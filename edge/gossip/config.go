package gossip

import (
	"fmt"
	"math"
	"net"
	"time"

	"github.com/hashicorp/memberlist"
)

// Profile names a memberlist timing profile. Each profile starts from the
// matching memberlist default and then applies the overrides in Config.
type Profile string

// The profiles. The edge ships ProfileLAN (see DefaultConfig).
const (
	// ProfileLAN starts from memberlist.DefaultLANConfig.
	ProfileLAN Profile = "lan"
	// ProfileWAN starts from memberlist.DefaultWANConfig.
	ProfileWAN Profile = "wan"
	// ProfileLocal starts from memberlist.DefaultLocalConfig (loopback).
	ProfileLocal Profile = "local"
)

// DefaultRetransmitMult is the edge's departure from memberlist's LAN
// default of 4. A broadcast is retransmitted RetransmitMult *
// ceil(log10(n+1)) times by every node that holds it; with 4, a
// 30-node mesh leaves a straggler that only the 30 s push-pull
// reaches in a few percent of changes. 8 doubles the tail's chances for
// a few hundred bytes per change, and costs nothing in steady state
// because gossip messages are only sent when there is something to send.
const DefaultRetransmitMult = 8

// DefaultGossipInterval is the edge's departure from memberlist's LAN
// default of 200 ms. A change needs about log_3(n)+2 gossip rounds to reach
// every node (GossipNodes is 3); at n=30 that is 5 rounds, 1 s with 200 ms,
// which misses the 1 s dissemination budget in the tail. 100 ms halves it.
// Gossip packets are only sent while broadcasts are queued, so the steady
// state costs nothing more.
const DefaultGossipInterval = 100 * time.Millisecond

// Config configures a gossip Node. Zero timing fields mean "the profile's
// default". Build one with Default, then set the identity and addresses.
type Config struct {
	// NodeID is the stable node identifier (a UUID in production) and the
	// memberlist node name. At most MaxNodeIDLen bytes. Required.
	NodeID string
	// Region is the node's region, carried in NodeMeta. At most
	// MaxRegionLen bytes.
	Region string
	// QUICAddr is the host:port peers dial for links, carried in NodeMeta.
	// At most MaxQUICAddrLen bytes.
	QUICAddr string

	// Profile selects the memberlist timing profile: lan, wan or local.
	Profile Profile
	// Label is the cluster name (memberlist Config.Label). Packets and
	// streams with another label are rejected, which isolates clusters.
	// At most memberlist.LabelMaxSize bytes.
	Label string
	// Keys is the gossip keyring: 16, 24 or 32 byte AES keys. Keys[0] is the
	// primary key used to encrypt; all keys are tried to decrypt. At least
	// one key is required: gossip is never sent in clear.
	Keys [][]byte

	// BindAddr is the IP address the gossip UDP and TCP listeners bind to.
	BindAddr string
	// BindPort is the gossip port (UDP and TCP). 0 lets the kernel choose;
	// the chosen port is then advertised.
	BindPort int
	// AdvertiseAddr is the IP address peers use to reach this node. It is
	// always set explicitly: memberlist's guess is wrong behind NAT and on
	// multi-homed hosts. Required.
	AdvertiseAddr string
	// AdvertisePort is the port peers use to reach this node. 0 means the
	// bound port (useful with BindPort 0).
	AdvertisePort int

	// Seeds are host:port gossip addresses joined at start and re-joined
	// every RejoinInterval.
	Seeds []string
	// RejoinInterval is how often, in wall time, the node re-joins its seeds
	// so a long partition heals (memberlist never reconnects on its own).
	// Each wait is jittered by up to ±25 %. Zero disables rejoin.
	RejoinInterval time.Duration

	// ProbeInterval is the time between failure-detection probes. Zero =
	// profile default (LAN 1 s, WAN 5 s, local 1 s).
	ProbeInterval time.Duration
	// ProbeTimeout is how long to wait for a probe's ack before an indirect
	// probe. Zero = profile default (LAN 500 ms, WAN 3 s, local 200 ms).
	ProbeTimeout time.Duration
	// SuspicionMult scales the suspicion timeout (a count, multiplied by
	// max(1, log10(n)) * ProbeInterval). Zero = profile default.
	SuspicionMult int
	// GossipInterval is the time between gossip rounds to GossipNodes
	// random peers. Zero = profile default (LAN 200 ms); Default sets
	// DefaultGossipInterval.
	GossipInterval time.Duration
	// RetransmitMult scales how many times each broadcast is retransmitted
	// (a count, multiplied by ceil(log10(n+1))). Zero = profile default;
	// Default sets DefaultRetransmitMult.
	RetransmitMult int
	// PushPullInterval is the time between full-state anti-entropy
	// exchanges with one random peer. Zero = profile default (LAN 30 s).
	PushPullInterval time.Duration

	// PacketSize is the largest gossip datagram, in bytes: memberlist
	// fills each gossip packet with queued broadcasts up to it. Zero =
	// memberlist's 1,400, under the common 1,500-byte MTU. Raise it only
	// where the network carries bigger datagrams unfragmented (jumbo
	// frames; the in-memory network of the fleet simulation, where a mass
	// join would otherwise spend two cores on per-packet work).
	PacketSize int

	// UpdateTimeout bounds how long Close waits for the draining update to
	// finish spreading before it leaves. Setters never wait.
	UpdateTimeout time.Duration
	// LeaveTimeout bounds how long Close waits for the leave broadcast.
	LeaveTimeout time.Duration
	// EventBuffer is the capacity, in events, of the channel between the
	// memberlist event delegate and the node's event loop. When full,
	// events are dropped and counted (the periodic refresh repairs state).
	EventBuffer int
	// RefreshInterval is how often the event loop re-reads memberlist's
	// member list to repair state after dropped events. Zero = the
	// effective ProbeInterval.
	RefreshInterval time.Duration
	// SuspicionTimeout is how long a suspicion (Node.Suspect: another
	// edge's link declared the node dead) marks a member suspect when
	// the node neither refutes it nor is declared dead by memberlist.
	// Zero = 10s.
	SuspicionTimeout time.Duration

	// Transport, when set, carries this node's gossip instead of a UDP and
	// TCP listener pair bound at BindAddr:BindPort: the node advertises the
	// address the transport's FinalAdvertiseAddr returns, and its bytes are
	// counted as on the sockets. It is for simulations of large fleets in
	// one process (shared/testkit/gossipnet); the edge never sets it. Each
	// node needs its own transport; Kill and Close shut it down.
	Transport memberlist.Transport

	// tweak, set only by tests, edits the final memberlist config.
	tweak func(*memberlist.Config)
}

// Limits of the identity fields carried in NodeMeta, in bytes.
const (
	MaxNodeIDLen   = 64
	MaxRegionLen   = 32
	MaxQUICAddrLen = 64
)

// DefaultConfig returns the configuration the edge ships: the LAN profile with
// DefaultRetransmitMult and DefaultGossipInterval, a 30 s rejoin and bounded waits. NodeID,
// AdvertiseAddr and Keys must still be set.
func DefaultConfig() Config {
	return Config{
		Profile:        ProfileLAN,
		Label:          "meridian",
		BindAddr:       "0.0.0.0",
		BindPort:       7946,
		RejoinInterval: 30 * time.Second,
		RetransmitMult: DefaultRetransmitMult,
		GossipInterval: DefaultGossipInterval,
		UpdateTimeout:  2 * time.Second,
		LeaveTimeout:   2 * time.Second,
		EventBuffer:    1024,
	}
}

// Validate reports the first problem with c, wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...)
	}
	switch {
	case c.NodeID == "":
		return bad("NodeID is empty")
	case len(c.NodeID) > MaxNodeIDLen:
		return bad("NodeID is %d bytes, max %d", len(c.NodeID), MaxNodeIDLen)
	case len(c.Region) > MaxRegionLen:
		return bad("Region is %d bytes, max %d", len(c.Region), MaxRegionLen)
	case len(c.QUICAddr) > MaxQUICAddrLen:
		return bad("QUICAddr is %d bytes, max %d", len(c.QUICAddr), MaxQUICAddrLen)
	case len(c.Label) > memberlist.LabelMaxSize:
		return bad("Label is %d bytes, max %d", len(c.Label), memberlist.LabelMaxSize)
	case c.AdvertiseAddr == "":
		return bad("AdvertiseAddr is empty; set it explicitly")
	case net.ParseIP(c.AdvertiseAddr) == nil:
		return bad("AdvertiseAddr %q is not an IP address", c.AdvertiseAddr)
	case c.BindAddr == "" || net.ParseIP(c.BindAddr) == nil:
		return bad("BindAddr %q is not an IP address", c.BindAddr)
	case c.BindPort < 0 || c.BindPort > math.MaxUint16:
		return bad("BindPort %d out of range", c.BindPort)
	case c.AdvertisePort < 0 || c.AdvertisePort > math.MaxUint16:
		return bad("AdvertisePort %d out of range", c.AdvertisePort)
	case len(c.Keys) == 0:
		return bad("no gossip keys; gossip must be encrypted")
	case c.RejoinInterval < 0, c.ProbeInterval < 0, c.ProbeTimeout < 0, c.GossipInterval < 0,
		c.PushPullInterval < 0, c.UpdateTimeout < 0, c.LeaveTimeout < 0, c.RefreshInterval < 0, c.SuspicionTimeout < 0:
		return bad("negative duration")
	case c.SuspicionMult < 0, c.RetransmitMult < 0:
		return bad("negative multiplier")
	case c.PacketSize != 0 && (c.PacketSize < 512 || c.PacketSize > 65000):
		return bad("PacketSize %d out of range (512 to 65000 bytes, or 0)", c.PacketSize)
	case c.EventBuffer <= 0:
		return bad("EventBuffer must be positive")
	}
	for i, k := range c.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return bad("key %d: %v", i, err)
		}
	}
	if _, err := c.profileBase(); err != nil {
		return err
	}
	return nil
}

func (c Config) profileBase() (*memberlist.Config, error) {
	switch c.Profile {
	case ProfileLAN, "":
		return memberlist.DefaultLANConfig(), nil
	case ProfileWAN:
		return memberlist.DefaultWANConfig(), nil
	case ProfileLocal:
		return memberlist.DefaultLocalConfig(), nil
	}
	return nil, fmt.Errorf("%w: unknown profile %q", ErrInvalidConfig, c.Profile)
}

// memberlistConfig returns the profile with c's overrides applied. It does
// not set the transport, delegates, keyring or logger.
func (c Config) memberlistConfig() (*memberlist.Config, error) {
	mc, err := c.profileBase()
	if err != nil {
		return nil, err
	}
	mc.Name = c.NodeID
	mc.Label = c.Label
	mc.BindAddr = c.BindAddr
	mc.BindPort = c.BindPort
	mc.AdvertiseAddr = c.AdvertiseAddr
	mc.AdvertisePort = c.AdvertisePort
	if c.ProbeInterval > 0 {
		mc.ProbeInterval = c.ProbeInterval
	}
	if c.ProbeTimeout > 0 {
		mc.ProbeTimeout = c.ProbeTimeout
	}
	if c.SuspicionMult > 0 {
		mc.SuspicionMult = c.SuspicionMult
	}
	if c.GossipInterval > 0 {
		mc.GossipInterval = c.GossipInterval
	}
	if c.RetransmitMult > 0 {
		mc.RetransmitMult = c.RetransmitMult
	}
	if c.PushPullInterval > 0 {
		mc.PushPullInterval = c.PushPullInterval
	}
	if c.PacketSize > 0 {
		mc.UDPBufferSize = c.PacketSize
	}
	if c.tweak != nil {
		c.tweak(mc)
	}
	return mc, nil
}

// DetectionBound is the time within which every survivor of an n-node
// cluster (n counts the failed node) marks a hard-killed node dead under
// cfg, ignoring scheduling delays and memberlist's awareness back-off
// (which only stretches probe intervals on a node that itself misses
// acks). It is the sum of:
//
//   - probe wait, (n-1) * ProbeInterval: every survivor walks its shuffled
//     list of the n-1 other nodes one per ProbeInterval, so the dead node is
//     probed by someone within one full round in the worst case (in
//     expectation within about ProbeInterval, since n-1 survivors probe);
//   - ProbeTimeout, after which the prober goes indirect and then suspects
//     (indirect probes finish within the same ProbeInterval slot, which the
//     probe wait already counts);
//   - the suspicion timeout. memberlist's minimum is
//     SuspicionMult * max(1, log10(max(1, n))) * ProbeInterval (util.go
//     suspicionTimeout), and the timer starts at SuspicionMaxTimeoutMult
//     times that whenever confirmations are expected (n-2 >= SuspicionMult-2),
//     shrinking toward the minimum as independent suspicions arrive. The
//     bound uses the maximum;
//   - spreading the dead message: ceil(log_GossipNodes(n)) + 1 gossip rounds.
func DetectionBound(cfg Config, n int) time.Duration {
	mc, err := cfg.memberlistConfig()
	if err != nil || n < 2 {
		return 0
	}
	probeWait := time.Duration(n-1) * mc.ProbeInterval
	nodeScale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	suspMin := time.Duration(float64(mc.SuspicionMult) * nodeScale * float64(mc.ProbeInterval))
	susp := suspMin
	if k := mc.SuspicionMult - 2; k >= 1 && n-2 >= k {
		susp = time.Duration(mc.SuspicionMaxTimeoutMult) * suspMin
	}
	fanout := math.Max(2, float64(mc.GossipNodes))
	rounds := math.Ceil(math.Log(float64(n))/math.Log(fanout)) + 1
	spread := time.Duration(rounds) * mc.GossipInterval
	return probeWait + mc.ProbeTimeout + susp + spread
}
