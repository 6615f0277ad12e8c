//go:build cluster

package clustertest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fangd/fangd/actors/channel/telegram/telegramtest"
)

// selfMember is the member id a node reports for itself.
func selfMember(t *testing.T, n *node) string {
	t.Helper()
	var st clusterStatus
	if code := getJSON(t, n.url+"/api/cluster", &st); code != 200 {
		t.Fatalf("%s: GET /api/cluster %d", n.name, code)
	}
	for _, m := range st.Members {
		if m.Self {
			return m.MemberID
		}
	}
	t.Fatalf("%s: no self member in %+v", n.name, st.Members)
	return ""
}

// stateOf is the state node `of` has in n's GET /api/cluster ("" if absent).
func stateOf(t *testing.T, n *node, of string) string {
	t.Helper()
	var st clusterStatus
	if getJSON(t, n.url+"/api/cluster", &st) != 200 {
		return ""
	}
	for _, m := range st.Members {
		if m.NodeName == of {
			return m.State
		}
	}
	return ""
}

// Issue 18's watchdog, against upstream's etcd-rejoin trap reproduced for
// real: the lease of n3's member key in etcd is revoked, which is what
// an etcd blip longer than the provider's 3 s TTL does (the key goes,
// the provider puts it back under a new lease a second later). n3 drops
// out of its own topology (upstream skips puts of its own key), n1 and n2
// block its member id for good, so it can never come back in-process.
// The watchdog audits the exclusion, and after its grace stops the node
// gracefully with exit status 75; restarted the way a supervisor would
// (same home), n3 joins with a fresh member id, audits cluster_rejoined
// and is "up" in every node's GET /api/cluster again, its audit chain
// holding every event.
func TestExcludedNodeWatchdogExitsAndRejoinsAfterRestart(t *testing.T) {
	t.Parallel()
	etcdSrv := startEtcdServer(t)
	etcd := etcdSrv.Endpoint
	home3 := homeWith(t, "[cluster]\nwatchdog_grace_secs = 3\nwatchdog_action = \"exit\"\n")
	n1, n2 := startNode(t, etcd, "n1"), startNode(t, etcd, "n2")
	n3 := startNodeIn(t, etcd, "n3", home3, nil)
	for _, n := range []*node{n1, n2, n3} {
		waitMembers(t, n, "n1,n2,n3", 20*time.Second)
	}
	old := selfMember(t, n3)

	revoked := excludeMember(t, etcd, old)

	// The trap: the others no longer count n3 as up (they blocked its
	// id), although its process and its node record are alive.
	deadline := time.Now().Add(20 * time.Second)
	for stateOf(t, n1, "n3") == "up" {
		if time.Now().After(deadline) {
			t.Fatal("n1 still sees n3 up after its member key's lease was revoked")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("n1 shows n3 %q %v after the revoke", stateOf(t, n1, "n3"), time.Since(revoked).Round(100*time.Millisecond))

	select {
	case err := <-n3.done:
		n3.done <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 75 {
			t.Fatalf("n3 exited with %v, want exit status 75\n%s", err, n3.log)
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("the watchdog did not stop the excluded node\n%s", n3.log)
	}
	t.Logf("n3 exited with 75 %v after the revoke", time.Since(revoked).Round(100*time.Millisecond))
	if !strings.Contains(n3.log.String(), "excluded from the cluster") {
		t.Fatalf("no watchdog message in n3's log\n%s", n3.log)
	}

	// The supervisor's restart: same home, same config.
	restarted := time.Now()
	n3b := startNodeIn(t, etcd, "n3", home3, nil)
	for _, n := range []*node{n1, n2, n3b} {
		waitMembers(t, n, "n1,n2,n3", 30*time.Second)
	}
	t.Logf("n3 up everywhere %v after its restart began", time.Since(restarted).Round(100*time.Millisecond))
	if now := selfMember(t, n3b); now == old {
		t.Fatalf("n3 rejoined under its blocked member id %s", old)
	}
	if _, err := os.Stat(filepath.Join(home3, "cluster-watchdog-exit")); !os.IsNotExist(err) {
		t.Fatalf("the watchdog marker is still there after the rejoin: %v", err)
	}
	audit := getBody(t, n3b.url+"/api/audit/recent?limit=50")
	for _, ev := range []string{"cluster_member_excluded", "cluster_watchdog_exit", "cluster_joined", "cluster_rejoined"} {
		if !strings.Contains(audit, `"event_type":"`+ev+`"`) {
			t.Fatalf("n3's audit lacks %s: %s", ev, audit)
		}
	}
}

// The interplay of the watchdog and channels: the node hosting a channel
// is excluded for real (its member key's lease revoked) and, with
// watchdog_action = "log", stays alive and excluded. It gives the channel
// up at once: the other node runs it, both nodes say so, and a message
// sent to the bot afterwards gets exactly one reply. The excluded node
// audited the exclusion and did not exit.
func TestExcludedHostGivesItsChannelUp(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	oai := fakeLLM(t)
	tg := fakeTelegram(t)
	nodes := channelNodesWith(t, etcd, oai, "\n[cluster]\nwatchdog_action = \"log\"\nwatchdog_grace_secs = 1\n", "n1", "n2")
	configure(t, nodes[0], "tg", telegramChannel(tg))
	var host, other *node
	for deadline := time.Now().Add(20 * time.Second); host == nil; time.Sleep(100 * time.Millisecond) {
		for i, n := range nodes {
			if st, on := channelState(n, "tg"); st == "connected" && on == n.name {
				host, other = n, nodes[1-i]
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no node runs the channel")
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	revoked := excludeMember(t, etcd, selfMember(t, host))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st, on := channelState(other, "tg")
		if st == "connected" && on == other.name && hostOf(host, "tg") == other.name {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the channel did not leave the excluded node: %s says %s on %q, %s says host %q",
				other.name, st, on, host.name, hostOf(host, "tg"))
		}
	}
	t.Logf("the channel ran on %s %v after %s's exclusion", other.name, time.Since(revoked).Round(100*time.Millisecond), host.name)

	tg.UserMessage(7, 9, "bob", "after the exclusion")
	if _, err := tg.WaitSent(ctx, func(s telegramtest.Sent) bool { return s.Text == "echo: after the exclusion" }); err != nil {
		t.Fatalf("no reply after the exclusion: %v", err)
	}
	time.Sleep(2 * time.Second)
	if n := countSent(tg, "echo: after the exclusion"); n != 1 {
		t.Fatalf("%d replies, want 1", n)
	}
	select {
	case err := <-host.done:
		host.done <- err
		t.Fatalf("with watchdog_action = \"log\" the excluded node exited: %v", err)
	default:
	}
	audit := getBody(t, host.url+"/api/audit/recent?limit=50")
	if !strings.Contains(audit, `"event_type":"cluster_member_excluded"`) || strings.Contains(audit, "cluster_watchdog_exit") {
		t.Fatalf("the excluded node's audit: %s", audit)
	}
}
