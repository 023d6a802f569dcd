package jsonscan

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestEachMember(t *testing.T) {
	doc := []byte(` {"a" : 1, "b\"c":"x\\\"y", "d":{"e":[1,"]",{}]}, "f":null}`)
	var keys, values []string
	EachMember(doc, func(k, v []byte) bool {
		keys, values = append(keys, string(k)), append(values, string(v))
		return true
	})
	wantK := []string{"a", `b\"c`, "d", "f"}
	wantV := []string{"1", `"x\\\"y"`, `{"e":[1,"]",{}]}`, "null"}
	if len(keys) != len(wantK) {
		t.Fatalf("keys %q, want %q", keys, wantK)
	}
	for i := range keys {
		if keys[i] != wantK[i] || values[i] != wantV[i] {
			t.Errorf("member %d: %q:%q, want %q:%q", i, keys[i], values[i], wantK[i], wantV[i])
		}
	}
	if v, ok := Member(doc, "d"); !ok || string(v) != wantV[2] {
		t.Errorf("Member d = %q, %v", v, ok)
	}
	if _, ok := Member(doc, "z"); ok {
		t.Error("Member z found")
	}
	// A malformed object ends the walk; no panic, nothing after the break.
	for _, bad := range []string{``, `[]`, `{`, `{"a"`, `{"a":`, `{"a":"x`, `{"a":{"b":1}`, `{"a":1 "b":2}`, `{"a":[\]}`} {
		EachMember([]byte(bad), func(k, v []byte) bool {
			if string(k) == "b" {
				t.Errorf("%q: member b after a break", bad)
			}
			return true
		})
	}
}

// FuzzEachMember checks the skim against a checking Scanner walk on
// valid objects, and that it never panics on any input.
func FuzzEachMember(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}],"c":"d\u00e9\n"}`, `{}`, `{"a\\":"\\\"","b":{"c":"}"}}`, `{"x":1e5,"y":true,"x":"2"}`, `{"a":[`, `{"a":"\`, ` { "a" : [ ] } `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		var skimmed [][2][]byte
		EachMember(doc, func(k, v []byte) bool {
			skimmed = append(skimmed, [2][]byte{k, v})
			return true
		})
		if !json.Valid(doc) {
			return
		}
		s := New(doc)
		if s.Peek() != Object {
			if len(skimmed) != 0 {
				t.Fatalf("%q: skimmed %d members of a non-object", doc, len(skimmed))
			}
			return
		}
		var want [][2][]byte
		s.Object(func(k []byte) bool {
			want = append(want, [2][]byte{append([]byte(nil), k...), s.Raw()})
			return true
		})
		if s.End() != nil {
			return // valid JSON the Scanner refuses (nested past MaxDepth)
		}
		if len(skimmed) != len(want) {
			t.Fatalf("%q: skimmed %d members, scanner %d", doc, len(skimmed), len(want))
		}
		for i := range want {
			if !bytes.Equal(skimmed[i][1], want[i][1]) {
				t.Fatalf("%q: member %d value %q, scanner %q", doc, i, skimmed[i][1], want[i][1])
			}
			if dec := unescape(skimmed[i][0]); dec != string(want[i][0]) && string(skimmed[i][0]) != string(want[i][0]) {
				t.Fatalf("%q: member %d key %q, scanner %q", doc, i, skimmed[i][0], want[i][0])
			}
			if v, ok := Member(doc, string(skimmed[i][0])); !ok || len(v) == 0 {
				t.Fatalf("%q: Member(%q) not found", doc, skimmed[i][0])
			}
		}
	})
}
