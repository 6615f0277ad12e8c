package kernel

import (
	"errors"
	"fmt"
	"testing"
)

func TestPublicMessageShowsOnlyTheDomainMessage(t *testing.T) {
	cause := errors.New("dial tcp 10.0.0.7:443: secret-bearing detail")
	wrapped := fmt.Errorf("configure: %w", &Error{Kind: KindUpstream, Code: "x", Msg: "the platform refused the token", Err: cause})
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("plain failure"), "plain failure"},
		{Invalid("bad name %q", "a b"), `bad name "a b"`},
		{wrapped, "the platform refused the token"},
		{Permanent(NotFound("no such channel")), "no such channel"},
	} {
		if got := PublicMessage(tc.err); got != tc.want {
			t.Errorf("PublicMessage(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
