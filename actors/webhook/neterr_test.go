package webhook

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/kernel/kerneltest"
	"github.com/fangd/fangd/transport/ssrf"
)

// switchResolver maps names to loopback until told to answer NXDOMAIN; it
// never touches DNS.
type switchResolver struct {
	mu    sync.Mutex
	names map[string]string
}

func (r *switchResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ip, ok := r.names[host]; ok {
		return []netip.Addr{netip.MustParseAddr(ip)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (r *switchResolver) forget(host string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.names, host)
}

// A receiver whose name stops resolving is reported as host_not_found by
// the test delivery and in the attempt log, not as a refusal; a URL whose
// host never resolved is host_not_found at create, and a refusal names its
// rule.
func TestNetworkCausesAreReported(t *testing.T) {
	rcv := newReceiver(t, "test-secret-1")
	rcv.setScript(204)
	// Every test delivery dials afresh (and so resolves again).
	rcv.srv.Config.SetKeepAlivesEnabled(false)
	res := &switchResolver{names: map[string]string{"hooks.test": "127.0.0.1"}}
	guard, err := ssrf.New([]string{"127.0.0.1/32"}, ssrf.WithResolver(res))
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, t.TempDir(), Options{Guard: guard})
	ctx := context.Background()
	kerneltest.WaitFor(t, "the webhook engine answers", func() bool { _, err := e.eng.List(context.Background(), ""); return err == nil })

	_, err = e.eng.Create(ctx, KindOutbound, Patch{Name: ptr("x"), URL: ptr("http://gone.invalid/"), Events: &[]string{"*"}})
	if de := kernel.AsError(err); de == nil || de.Code != "host_not_found" {
		t.Fatalf("create with a name that does not resolve: %v", err)
	}
	_, err = e.eng.Create(ctx, KindOutbound, Patch{Name: ptr("x"), URL: ptr("http://127.0.0.2:4797/"), Events: &[]string{"*"}})
	if de := kernel.AsError(err); de == nil || de.Code != "url_not_allowed" || de.Kind != kernel.KindInvalid ||
		!strings.Contains(de.Msg, "loopback") || !strings.Contains(de.Msg, "allow_hosts") {
		t.Fatalf("create with a loopback address not allowed: %v", err)
	}
	_, err = e.eng.Create(ctx, KindOutbound, Patch{Name: ptr("x"), URL: ptr("http://169.254.169.254/"), Events: &[]string{"*"}})
	if de := kernel.AsError(err); de == nil || de.Code != "url_not_allowed" || strings.Contains(de.Msg, "add ") {
		t.Fatalf("link-local refusal: %v", err)
	}

	port := rcv.srv.Listener.Addr().(*net.TCPAddr).Port
	v := e.create(t, "http://hooks.test:"+strconv.Itoa(port)+"/", "test-secret-1", "hook.wake")
	if r, err := e.eng.Test(context.Background(), v.ID); err != nil || r.ResponseStatus != 204 {
		t.Fatalf("test through the name: %+v %v", r, err)
	}
	res.forget("hooks.test")
	_, err = e.eng.Test(context.Background(), v.ID)
	de := kernel.AsError(err)
	if de == nil || de.Code != "host_not_found" || !strings.Contains(de.Msg, "hooks.test does not resolve") {
		t.Fatalf("test delivery to a name that no longer resolves: %v", err)
	}
}
