package jsonscan

import (
	"encoding/json"
	"reflect"
	"testing"
)

// decode turns a document into Go values the way encoding/json does, as
// a reference for the scanner.
func decode(s *Scanner) any {
	switch s.Peek() {
	case Object:
		m := map[string]any{}
		s.Object(func(k []byte) bool {
			var key string
			if json.Unmarshal(append(append([]byte{'"'}, k...), '"'), &key) != nil {
				key = string(k)
			}
			m[key] = decode(s)
			return true
		})
		return m
	case Array:
		a := []any{}
		s.Array(func(int) bool { a = append(a, decode(s)); return true })
		return a
	case String:
		return s.Str()
	case Number:
		return s.Float()
	case Bool:
		return s.Bool()
	case Null:
		s.Null()
		return nil
	}
	s.Skip()
	return nil
}

func TestScanner(t *testing.T) {
	doc := `{"a":[1,-2.5e3,true,false,null,"x\"y\\u00e9\ud83d\ude00"],"b":{},"c":[],"d":"plain","n":12345678901}`
	s := New([]byte(doc))
	got := decode(s)
	if err := s.End(); err != nil {
		t.Fatal(err)
	}
	var want any
	json.Unmarshal([]byte(doc), &want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v\nwant %#v", got, want)
	}
	s = New([]byte(`{"n":12345678901,"f":1.5}`))
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "n":
			if n, ok := s.Int(); !ok || n != 12345678901 {
				t.Errorf("int = %d %v", n, ok)
			}
		case "f":
			if _, ok := s.Int(); ok {
				t.Error("1.5 read as an integer")
			}
		}
		return true
	})
}

func TestScannerRejects(t *testing.T) {
	for _, doc := range []string{``, `{`, `{"a"}`, `{"a":}`, `[1,]`, `{"a":1,}`, `"\x01"`, `"\q"`, `"\u12"`, `01`, `1.`, `-`, `1e`, `tru`, `nul`, `{"a":1} x`, `[`, `"abc`} {
		s := New([]byte(doc))
		s.Skip()
		if s.End() == nil {
			t.Errorf("%q accepted", doc)
		}
	}
}

// FuzzScanner checks the scanner against encoding/json: it accepts exactly
// the documents json.Valid accepts, and reads them to the same values.
func FuzzScanner(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}],"c":"d\u00e9\n"}`, `[]`, `"\ud800"`, `-0.5e-7`, `{"a":"\xff"}`, `[[[[]]]]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		s := New(doc)
		got := decode(s)
		ok := s.End() == nil
		if ok != json.Valid(doc) {
			t.Fatalf("%q: scanner ok=%v, json.Valid=%v (%v)", doc, ok, json.Valid(doc), s.Err())
		}
		if !ok {
			return
		}
		var want any
		if json.Unmarshal(doc, &want) != nil {
			return // valid JSON that encoding/json cannot hold (a number out of range)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n got %#v\nwant %#v", doc, got, want)
		}
	})
}

func TestTooDeep(t *testing.T) {
	tests := []struct {
		in   string
		at   int
		deep bool
	}{
		{`[[]]`, -1, false},
		{`[[[]]]`, 2, true},
		{`{"a":{"b":[1]}}`, 10, true},
		{`["[[[[", "\"[[[["]`, -1, false},
		{`[{}, {}, [], []]`, -1, false},
	}
	for _, tt := range tests {
		if at, deep := TooDeep([]byte(tt.in), 2); at != tt.at || deep != tt.deep {
			t.Errorf("TooDeep(%s, 2) = %d, %v; want %d, %v", tt.in, at, deep, tt.at, tt.deep)
		}
	}
}

// TestObjectValueNotRead checks a callback that only peeks at a value:
// the object skips it whatever whitespace comes before it, and a member
// without a value is an error.
func TestObjectValueNotRead(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{`{"a": 5}`, true},
		{`{"a" :  "x" , "b":[1]}`, true},
		{"{\"a\":\n\t{}}", true},
		{`{"a": }`, false},
		{`{"a":}`, false},
		{`{"a": ,"b":1}`, false},
	} {
		s := New([]byte(c.in))
		s.Object(func([]byte) bool { s.Peek(); return true })
		if err := s.End(); (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", c.in, err, c.ok)
		}
	}
}
