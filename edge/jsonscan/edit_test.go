package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"unicode/utf8"
)

func TestSet(t *testing.T) {
	for _, c := range []struct {
		data, raw string
		path      []string
		want      string
	}{
		{`{"model":"a","x":1}`, `"b"`, []string{"model"}, `{"model":"b","x":1}`},
		{`{ "x" : [1,2] , "model" : "a" }`, `"b"`, []string{"model"}, `{ "x" : [1,2] , "model" : "b" }`},
		{`{}`, `"b"`, []string{"model"}, `{"model":"b"}`},
		{` {"x":1} `, `true`, []string{"y"}, ` {"x":1,"y":true} `},
		{`{"x":1}`, `true`, []string{"stream_options", "include_usage"}, `{"x":1,"stream_options":{"include_usage":true}}`},
		{`{"stream_options":{"a":1}}`, `true`, []string{"stream_options", "include_usage"}, `{"stream_options":{"a":1,"include_usage":true}}`},
		{`{"stream_options":{"include_usage":false}}`, `true`, []string{"stream_options", "include_usage"}, `{"stream_options":{"include_usage":true}}`},
		{`{"model":"a","model":"c"}`, `"b"`, []string{"model"}, `{"model":"b","model":"b"}`},
		{`{"mo\u0064el":"a"}`, `"b"`, []string{"model"}, `{"mo\u0064el":"b"}`},
		{`{"u":{"d":{"c":1}}}`, `2`, []string{"u", "d", "c"}, `{"u":{"d":{"c":2}}}`},
	} {
		got, err := Set([]byte(c.data), []byte(c.raw), c.path...)
		if err != nil || string(got) != c.want {
			t.Errorf("Set(%s, %s, %q) = %s, %v; want %s", c.data, c.raw, c.path, got, err, c.want)
		}
	}
}

func TestSetErrors(t *testing.T) {
	for _, c := range []struct {
		data  string
		path  []string
		path_ bool // want ErrPath
	}{
		{`[1]`, []string{"model"}, false},
		{`{"model":"a"`, []string{"model"}, false},
		{`{"model":"a"} x`, []string{"model"}, false},
		{``, []string{"model"}, false},
		{`{"s":1}`, []string{"s", "t"}, true},
		{`{"s":1}`, nil, true},
	} {
		got, err := Set([]byte(c.data), []byte(`1`), c.path...)
		if err == nil || got != nil || errors.Is(err, ErrPath) != c.path_ {
			t.Errorf("Set(%s, %q) = %s, %v; want an error (ErrPath: %v)", c.data, c.path, got, err, c.path_)
		}
	}
}

func TestDelete(t *testing.T) {
	for _, c := range []struct {
		data string
		path []string
		want string
	}{
		{`{"model":"a","x":1}`, []string{"model"}, `{"x":1}`},
		{`{"x":1,"model":"a"}`, []string{"model"}, `{"x":1}`},
		{`{"x":1, "model":"a", "y":[2]}`, []string{"model"}, `{"x":1,"y":[2]}`},
		{`{"model":"a"}`, []string{"model"}, `{}`},
		{`{"model":"a","model":"b","x":1}`, []string{"model"}, `{"x":1}`},
		{`{"x":1}`, []string{"model"}, `{"x":1}`},
		{`{"a":{"b":1,"c":2}}`, []string{"a", "b"}, `{"a":{"c":2}}`},
		{`{"a":3}`, []string{"a", "b"}, `{"a":3}`},
	} {
		got, err := Delete([]byte(c.data), c.path...)
		if err != nil || string(got) != c.want {
			t.Errorf("Delete(%s, %q) = %s, %v; want %s", c.data, c.path, got, err, c.want)
		}
	}
	if _, err := Delete([]byte(`{"a":`), "a"); err == nil {
		t.Error("Delete accepted a broken object")
	}
}

func TestAppendStringReadsBack(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\back`, "nl\n\r\t\x00\x1f", "é ☃ 𝄞", "\u2028\u2029", "bad\xffutf8"} {
		b := AppendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("AppendString(%q) = %s: %v", s, b, err)
		}
		want := s
		if !utf8.ValidString(s) {
			want = string(bytes.ToValidUTF8([]byte(s), []byte("\uFFFD")))
		}
		if got != want {
			t.Errorf("AppendString(%q) read back as %q", s, got)
		}
		if std, _ := json.Marshal(want); utf8.ValidString(s) && !bytes.Equal(bytes.ReplaceAll(std, []byte(`\u003c`), []byte("<")), b) {
			t.Logf("AppendString(%q) = %s, encoding/json %s", s, b, std) // informative: escapes may differ
		}
	}
}

// FuzzSetDelete checks Set and Delete against encoding/json on any
// object: the edited member reads back as set (or is gone) and every
// other member is unchanged; anything that is not an object is an error,
// never a panic.
func FuzzSetDelete(f *testing.F) {
	for _, s := range []string{`{"model":"a","x":1}`, `{}`, `{"a":{"b":[1,{"c":null}]},"model":1e3}`, `{"model":"a","model":2}`, `[]`, `{"a":`, `{"mo\u0064el":true}`} {
		f.Add([]byte(s), "model", "sub")
	}
	f.Fuzz(func(t *testing.T, data []byte, key, sub string) {
		var before map[string]json.RawMessage
		isObject := json.Unmarshal(data, &before) == nil && New(data).Peek() == Object
		set, err := Set(data, []byte(`{"v":"new"}`), key)
		if !isObject {
			if err == nil && json.Valid(data) {
				t.Fatalf("Set accepted %q, which is not an object", data)
			}
			return
		}
		if !utf8.ValidString(key) {
			return // the key is written as U+FFFD
		}
		if err != nil {
			t.Fatalf("Set(%q, %q): %v", data, key, err)
		}
		var after map[string]json.RawMessage
		if err := json.Unmarshal(set, &after); err != nil {
			t.Fatalf("Set(%q, %q) = %q, not JSON: %v", data, key, set, err)
		}
		if string(after[key]) != `{"v":"new"}` {
			t.Fatalf("Set(%q, %q) = %q: member is %s", data, key, set, after[key])
		}
		same(t, before, after, key)
		nested, err := Set(data, []byte(`7`), key, sub)
		v, had := before[key]
		if had && New(v).Peek() != Object {
			if !errors.Is(err, ErrPath) {
				t.Fatalf("nested Set(%q, %q, %q) through a non-object = %q, %v; want ErrPath", data, key, sub, nested, err)
			}
		} else if utf8.ValidString(sub) {
			var top, n map[string]json.RawMessage
			if err != nil || json.Unmarshal(nested, &top) != nil || json.Unmarshal(top[key], &n) != nil || string(n[sub]) != "7" {
				t.Fatalf("nested Set(%q, %q, %q) = %q, %v", data, key, sub, nested, err)
			}
		}
		del, err := Delete(data, key)
		if err != nil {
			t.Fatalf("Delete(%q, %q): %v", data, key, err)
		}
		var gone map[string]json.RawMessage
		if err := json.Unmarshal(del, &gone); err != nil {
			t.Fatalf("Delete(%q, %q) = %q, not JSON: %v", data, key, del, err)
		}
		if _, ok := gone[key]; ok {
			t.Fatalf("Delete(%q, %q) = %q: still there", data, key, del)
		}
		same(t, before, gone, key)
	})
}

// same checks that a and b agree on every member but key.
func same(t *testing.T, a, b map[string]json.RawMessage, key string) {
	t.Helper()
	for k, v := range a {
		if k == key {
			continue
		}
		var x, y any
		json.Unmarshal(v, &x)
		json.Unmarshal(b[k], &y)
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("member %q changed: %s → %s", k, v, b[k])
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok && k != key {
			t.Fatalf("member %q appeared", k)
		}
	}
}
