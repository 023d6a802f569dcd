package wanterr

import (
	"errors"
	"fmt"
	"testing"
)

type recorder struct{ failed string }

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}

func TestContains(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
		fail bool
	}{
		{nil, "", false},
		{errors.New("x: bad port"), "bad port", false},
		{errors.New("x: bad port"), "", true},
		{nil, "bad port", true},
		{errors.New("x: bad host"), "bad port", true},
	} {
		var r recorder
		Contains(&r, tc.err, tc.want)
		if (r.failed != "") != tc.fail {
			t.Errorf("Contains(%v, %q): failed %q, want failure %v", tc.err, tc.want, r.failed, tc.fail)
		}
	}
}
