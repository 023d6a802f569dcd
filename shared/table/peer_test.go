package table

import "testing"

func TestPeerProvider(t *testing.T) {
	good := map[string][2]string{
		"meridian-link://127.0.0.1:7443/edge-b":    {"edge-b", "127.0.0.1:7443"},
		"meridian-link://[::1]:7443/edge-b":        {"edge-b", "[::1]:7443"},
		"meridian-link://edge-b.internal:1/edge-b": {"edge-b", "edge-b.internal:1"},
	}
	for raw, want := range good {
		node, addr, err := ParsePeerURL(raw)
		if err != nil || node != want[0] || addr != want[1] {
			t.Errorf("%s: %q %q %v", raw, node, addr, err)
		}
		tab := &Table{Providers: []Provider{{ID: "b", Kind: KindPeer, BaseURL: raw}}}
		if err := tab.Validate(); err != nil {
			t.Errorf("%s: %v", raw, err)
		}
	}
	for _, raw := range []string{
		"", "http://127.0.0.1:7443/edge-b", "meridian-link://127.0.0.1/edge-b", "meridian-link://127.0.0.1:7443",
		"meridian-link://127.0.0.1:7443/", "meridian-link://127.0.0.1:7443/a/b", "meridian-link://u@127.0.0.1:7443/edge-b",
		"meridian-link://127.0.0.1:7443/edge-b?x=1",
	} {
		tab := &Table{Providers: []Provider{{ID: "b", Kind: KindPeer, BaseURL: raw}}}
		err := tab.Validate()
		fe, ok := err.(*FieldError)
		if !ok || fe.Field != "providers[0].base_url" {
			t.Errorf("%q: %v", raw, err)
		}
	}
}
