package llm

import (
	"errors"
	"strconv"
	"unsafe"

	"github.com/tidwall/gjson"
)

// The edge reads JSON on its hot path (request bodies, stream chunks)
// with one toolkit, gjson, and writes it by appending bytes (sjson or
// AppendJSONString and friends). encoding/json stays for configuration,
// admin endpoints and cold paths. The helpers here keep gjson's reads to
// one pass: a document is checked once (Check), then walked with
// Result.ForEach, reading each value's Str, Raw or Num as ForEach found
// it, never with a path lookup that rescans.

// MaxDepth bounds nesting of a JSON document the edge reads: gjson's
// validator recurses per level, so Check refuses deeper documents
// before it runs.
const MaxDepth = 512

// ErrTooDeep reports a document nested deeper than MaxDepth.
var ErrTooDeep = errors.New("JSON nested deeper than 512 levels")

// ErrSyntax reports bytes that are not one JSON value.
var ErrSyntax = errors.New("not valid JSON")

// View returns the gjson value of data without copying it: the Raw and
// Str of every value read from it point into data (Str is a new string
// only where the JSON string had escapes), so data must not change
// while they are used.
func View(data []byte) gjson.Result {
	return gjson.Parse(unsafe.String(unsafe.SliceData(data), len(data)))
}

// Check validates data as one JSON value nested at most MaxDepth deep,
// and returns its view (View).
func Check(data []byte) (gjson.Result, error) {
	// Nesting past MaxDepth takes more than MaxDepth bytes, so a short
	// document (a typical stream chunk) skips the count.
	if len(data) > MaxDepth {
		if _, deep := TooDeep(data, MaxDepth); deep {
			return gjson.Result{}, ErrTooDeep
		}
	}
	if !gjson.ValidBytes(data) {
		return gjson.Result{}, ErrSyntax
	}
	return View(data), nil
}

// RawBytes returns the bytes of v, read from the document doc it was
// found in, as a subslice of doc (no copy).
func RawBytes(doc []byte, v gjson.Result) []byte {
	if v.Index >= 0 && v.Index+len(v.Raw) <= len(doc) {
		return doc[v.Index : v.Index+len(v.Raw) : v.Index+len(v.Raw)]
	}
	return []byte(v.Raw)
}

// Int reads v as an integer: ok is false for anything but a number
// without fraction or exponent within int64's range, as encoding/json
// decides for an int field.
func Int(v gjson.Result) (n int64, ok bool) {
	if v.Type != gjson.Number {
		return 0, false
	}
	n, err := strconv.ParseInt(v.Raw, 10, 64)
	return n, err == nil
}

// TooDeep reports whether data nests objects and arrays deeper than
// limit, and if so the offset of the first bracket past it. It is one
// pass that counts brackets outside strings and checks nothing else, so
// a caller can refuse hostile nesting before any parser recurses into
// it; a body it passes may still be invalid JSON.
func TooDeep(data []byte, limit int) (at int, deep bool) {
	depth := 0
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '"':
			// Skip the string; an escape hides the byte after it.
			for i++; i < len(data) && data[i] != '"'; i++ {
				if data[i] == '\\' {
					i++
				}
			}
		case '[', '{':
			if depth++; depth > limit {
				return i, true
			}
		case ']', '}':
			depth--
		}
	}
	return -1, false
}
