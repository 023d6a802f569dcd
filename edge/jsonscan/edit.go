package jsonscan

import (
	"errors"
	"unicode/utf8"
)

// Edits. The adapters rewrite a few members of a body they otherwise
// pass through untouched (the model's name, a version field, a usage
// option); Set and Delete do that without decoding and re-encoding the
// rest, so the upstream gets the client's bytes. Both read the object
// once and check it; a body that is not one JSON object is an error.
//
// A key may occur twice in an object (JSON allows it, readers differ on
// which wins): Set replaces the value of every occurrence and Delete
// removes every occurrence, so no reader sees the old value.

// ErrPath reports an empty path or a member on the path that is not an
// object.
var ErrPath = errors.New("jsonscan: path does not lead through objects")

// member is one member of an object: data[key:end] is `"key": value`,
// data[val:end] the value.
type member struct {
	key, val, end int
	match         bool
}

// object is a scanned object: data[open] is '{', data[close] is '}'.
type object struct {
	open, close int
	members     []member // all of them, or only the matches (scanObject's all)
	count       int      // how many members the object has
	matches     int
}

// scanObject reads data, which must be one object and nothing else, and
// marks the members named name. It keeps every member when all is set,
// else only the matches (Set needs no others, and saves their slice).
func scanObject(data []byte, name string, all bool) (object, error) {
	s := New(data)
	o := object{open: s.Offset()}
	cursor := o.open + 1
	s.Object(func(key []byte) bool {
		m := member{key: skipSpace(data, cursor), match: keyIs(key, name, s.escaped)}
		m.val = s.Offset()
		m.end = m.val + len(s.Raw())
		cursor = s.Offset() + 1 // past the ',' (or the '}')
		o.count++
		if m.match {
			o.matches++
		}
		if all || m.match {
			o.members = append(o.members, m)
		}
		return s.err == nil
	})
	if err := s.End(); err != nil {
		return object{}, err
	}
	o.close = len(trimSpaceRight(data)) - 1
	return o, nil
}

// keyIs reports whether the raw key (escapes in place) is name.
func keyIs(raw []byte, name string, escaped bool) bool {
	if !escaped {
		return string(raw) == name
	}
	return unescape(raw) == name
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

func trimSpaceRight(data []byte) []byte {
	for len(data) > 0 {
		switch data[len(data)-1] {
		case ' ', '\t', '\n', '\r':
			data = data[:len(data)-1]
		default:
			return data
		}
	}
	return data
}

// Set returns data, a JSON object, with the member at path set to the
// JSON value raw, which it does not check. An existing member keeps its
// place; a new one is appended to its object, and objects missing along
// the path are created. A member on the path that exists but is not an
// object is an error (ErrPath). data itself is not modified.
func Set(data, raw []byte, path ...string) ([]byte, error) {
	if len(path) == 0 {
		return nil, ErrPath
	}
	o, err := scanObject(data, path[0], false)
	if err != nil {
		return nil, err
	}
	if o.matches == 0 {
		val := raw
		if len(path) > 1 {
			if val, err = Set([]byte("{}"), raw, path[1:]...); err != nil {
				return nil, err
			}
		}
		add := make([]byte, 0, len(path[0])+len(val)+4)
		if o.count > 0 {
			add = append(add, ',')
		}
		add = append(AppendString(add, path[0]), ':')
		add = append(add, val...)
		return splice(data, o.close, o.close, add), nil
	}
	out := data
	for i := len(o.members) - 1; i >= 0; i-- { // back to front: earlier offsets stay valid
		m := o.members[i]
		if !m.match {
			continue
		}
		val := raw
		if len(path) > 1 {
			sub := data[m.val:m.end]
			if New(sub).Peek() != Object {
				return nil, ErrPath
			}
			if val, err = Set(sub, raw, path[1:]...); err != nil {
				return nil, err
			}
		}
		out = splice(out, m.val, m.end, val)
	}
	return out, nil
}

// Delete returns data, a JSON object, without the member at path. data is
// returned unchanged when the member is absent or the path runs through a
// value that is not an object. The members kept keep their bytes; the
// whitespace between them may change.
func Delete(data []byte, path ...string) ([]byte, error) {
	if len(path) == 0 {
		return nil, ErrPath
	}
	o, err := scanObject(data, path[0], true)
	if err != nil {
		return nil, err
	}
	if o.matches == 0 {
		return data, nil
	}
	if len(path) > 1 {
		out := data
		for i := len(o.members) - 1; i >= 0; i-- {
			m := o.members[i]
			if !m.match || New(data[m.val:m.end]).Peek() != Object {
				continue
			}
			val, err := Delete(data[m.val:m.end], path[1:]...)
			if err != nil {
				return nil, err
			}
			out = splice(out, m.val, m.end, val)
		}
		return out, nil
	}
	out := make([]byte, 0, len(data))
	out = append(out, data[:o.open+1]...)
	first := true
	for _, m := range o.members {
		if m.match {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, data[m.key:m.end]...)
	}
	return append(out, data[o.close:]...), nil
}

// splice returns a new slice: data with data[from:to] replaced by with.
func splice(data []byte, from, to int, with []byte) []byte {
	out := make([]byte, 0, len(data)-(to-from)+len(with))
	out = append(out, data[:from]...)
	out = append(out, with...)
	return append(out, data[to:]...)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s to dst as a JSON string: quoted, with '"', '\\'
// and control characters escaped, and invalid UTF-8 replaced by U+FFFD.
// It escapes as encoding/json does without HTML escaping, so a string
// it writes reads back equal to s (where s is valid UTF-8).
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON; escaped, as encoding/json does,
		// for readers that embed JSON in JavaScript.
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
