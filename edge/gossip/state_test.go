package gossip

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// largestMeta has every field at its realistic maximum.
func largestMeta() NodeMeta {
	return NodeMeta{
		NodeID:        strings.Repeat("n", MaxNodeIDLen),
		Region:        strings.Repeat("r", MaxRegionLen),
		QUICAddr:      "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
		TableRevision: math.MaxUint64,
		LoadClass:     math.MaxUint8,
		ModelsDigest:  math.MaxUint64,
		Draining:      true,
		Leaving:       true,
	}
}

func TestMetaFitsMemberlistLimit(t *testing.T) {
	m := largestMeta()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > memberlist.MetaMaxSize {
		t.Fatalf("largest meta is %d bytes, limit %d", len(b), memberlist.MetaMaxSize)
	}
	// Even at the configured maximum QUIC address length.
	m.QUICAddr = strings.Repeat("q", MaxQUICAddrLen)
	if b, err = m.Encode(); err != nil || len(b) > memberlist.MetaMaxSize {
		t.Fatalf("max-length meta: %d bytes, %v", len(b), err)
	}
	if b[0] != MetaVersion {
		t.Fatalf("first byte %d, want version %d", b[0], MetaVersion)
	}
	got, err := DecodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	m.Region = strings.Repeat("r", MaxRegionLen+1)
	if _, err := m.Encode(); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("oversized region: %v", err)
	}
}

func TestDecodeMetaRejects(t *testing.T) {
	good, _ := largestMeta().Encode()
	bad2 := bytes.Clone(good)
	bad2[0] = 2
	for name, b := range map[string][]byte{
		"empty":     nil,
		"truncated": good[:len(good)-1],
		"trailing":  append(bytes.Clone(good), 0),
		"version 2": bad2,
		"short":     good[:metaFixedLen],
	} {
		if _, err := DecodeMeta(b); !errors.Is(err, ErrBadMeta) {
			t.Errorf("%s: want ErrBadMeta, got %v", name, err)
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	for _, m := range []NodeMeta{{}, largestMeta(), {NodeID: "a", Region: "eu", QUICAddr: "1.2.3.4:5"}} {
		b, _ := m.Encode()
		f.Add(b)
	}
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes, modulo unknown flag bits.
		out, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded meta does not encode: %v", err)
		}
		in := bytes.Clone(b)
		in[1] &= metaFlagsKnown
		if !bytes.Equal(in, out) {
			t.Fatalf("round trip differs:\n in %x\nout %x", in, out)
		}
	})
}

func TestModelsDigestIgnoresOrder(t *testing.T) {
	if ModelsDigest([]string{"a", "b"}) != ModelsDigest([]string{"b", "a"}) {
		t.Fatal("digest depends on order")
	}
	if ModelsDigest([]string{"ab"}) == ModelsDigest([]string{"a", "b"}) {
		t.Fatal("digest ignores name boundaries")
	}
}

func TestMergeNeverGoesBack(t *testing.T) {
	tab := newTable()
	tab.merge(record{Node: "x", ModelsVer: 5, Models: []string{"new"}, LoadVer: 5, Load: Load{QueueDepth: 5}})
	if m, l := tab.merge(record{Node: "x", ModelsVer: 4, Models: []string{"old"}, LoadVer: 6, Load: Load{QueueDepth: 6}}); m || !l {
		t.Fatalf("merge changed models=%v load=%v", m, l)
	}
	p := tab.peers["x"]
	if p.rec.Models[0] != "new" || p.rec.Load.QueueDepth != 6 {
		t.Fatalf("record %+v", p.rec)
	}
	// Push-pull state round-trips and garbage is rejected.
	recs, err := decodeState(encodeState(tab.snapshot()))
	if err != nil || len(recs) != 1 || recs[0].ModelsVer != 5 {
		t.Fatalf("state round trip: %+v %v", recs, err)
	}
	for _, b := range [][]byte{nil, {9}, {stateVersion1, '{'}} {
		if _, err := decodeState(b); !errors.Is(err, ErrBadMessage) {
			t.Errorf("decodeState(%q): %v", b, err)
		}
	}
	for _, b := range [][]byte{nil, {msgModels}, {7, '{', '}'}, {msgLoad, '{', '}'}} {
		if _, _, err := decodeRecordMsg(b); !errors.Is(err, ErrBadMessage) {
			t.Errorf("decodeRecordMsg(%q): %v", b, err)
		}
	}
}

func TestNamedBroadcastInvalidatesByName(t *testing.T) {
	q := &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 10 }, RetransmitMult: 3}
	q.QueueBroadcast(&namedBroadcast{name: "load/a", msg: []byte("1")})
	q.QueueBroadcast(&namedBroadcast{name: "load/b", msg: []byte("2")})
	q.QueueBroadcast(&namedBroadcast{name: "load/a", msg: []byte("3")})
	if q.NumQueued() != 2 {
		t.Fatalf("queued %d, want 2", q.NumQueued())
	}
	a := &namedBroadcast{name: "models/a"}
	if !a.Invalidates(&namedBroadcast{name: "models/a"}) || a.Invalidates(&namedBroadcast{name: "load/a"}) {
		t.Fatal("Invalidates must compare names")
	}
}

func TestRTTEWMA(t *testing.T) {
	tab := newTable()
	if _, ok := tab.rtt("p"); ok {
		t.Fatal("rtt before any sample")
	}
	tab.observeRTT("p", 10*time.Millisecond)
	tab.observeRTT("p", 20*time.Millisecond)
	got, ok := tab.rtt("p")
	if want := 12 * time.Millisecond; !ok || got != want { // 0.2*20 + 0.8*10
		t.Fatalf("rtt %v, want %v", got, want)
	}
}
