package whatsapp

import (
	"errors"
	"net/http"
	"strconv"
	"testing"

	"github.com/fangd/fangd/actors/channel"
)

func TestBuildNamesTheMissingField(t *testing.T) {
	spec, _ := channel.Lookup("whatsapp")
	cases := []struct {
		values  map[string]string
		secrets map[string]string
		field   string
	}{
		{nil, nil, "access_token"},
		{map[string]string{"phone_number_id": "1"}, map[string]string{"access_token": "t"}, "app_secret"},
		{nil, map[string]string{"access_token": "t", "app_secret": "s"}, "phone_number_id"},
		{map[string]string{"phone_number_id": "1/../2"}, map[string]string{"access_token": "t", "app_secret": "s"}, "phone_number_id"},
		{map[string]string{"phone_number_id": "1", "api_url": "graph.facebook.com"}, map[string]string{"access_token": "t", "app_secret": "s"}, "api_url"},
		{map[string]string{"gateway_url": "localhost:3009"}, nil, "gateway_url"},
	}
	for _, c := range cases {
		_, err := New(&channel.Config{Spec: spec, Values: c.values, Secrets: c.secrets})
		var fe *channel.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%v: err = %v, want field %s", c.values, err, c.field)
		}
	}
	if _, err := New(&channel.Config{Spec: spec, Values: map[string]string{"phone_number_id": "1"},
		Secrets: map[string]string{"access_token": "t", "app_secret": "s"}}); err != nil {
		t.Fatal(err)
	}
}

func TestClassifyGraphErrors(t *testing.T) {
	cases := []struct {
		code, sub int
		perm, rej bool
		transient bool
	}{
		{190, 463, true, false, false},
		{200, 0, true, false, false},
		{100, 33, true, false, false},
		{130429, 0, false, false, true},
		{131056, 0, false, false, true},
		{131047, 0, false, true, false},
		{131026, 0, false, true, false},
		{131000, 0, false, false, true},
	}
	for _, c := range cases {
		err := classifyBody(400, c.code, c.sub)
		if channel.IsPermanent(err) != c.perm || channel.IsRejected(err) != c.rej ||
			(c.transient && (channel.IsPermanent(err) || channel.IsRejected(err))) {
			t.Errorf("code %d/%d: %v perm=%v rej=%v", c.code, c.sub, err, channel.IsPermanent(err), channel.IsRejected(err))
		}
	}
}

func classifyBody(status, code, sub int) error {
	body := []byte(`{"error":{"message":"m","type":"OAuthException","code":` + itoa(code) + `,"error_subcode":` + itoa(sub) + `}}`)
	return classify(&http.Response{StatusCode: status, Header: http.Header{}}, body)
}

func itoa(n int) string { return strconv.Itoa(n) }
