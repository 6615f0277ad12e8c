package main

// The LibreFang operations list (issue 16): every operation of LibreFang's
// openapi.json (version 2026.8.19) under the areas, /api/{agents
// (what the areas need), channels, mcp, a2a, audit, security, logs, usage,
// budget, webhooks, hooks, pairing, auth, comms, approvals, peers,
// network}, /a2a/*, /.well-known/* and /mcp, written here by hand from
// LibreFang's document and handlers (not copied from its files). Each row
// names the contract test that drives the operation with LibreFang's
// request shape and checks LibreFang's response fields (and the seed
// page's); TestLibreFangOperationsServed checks the list against the real
// binary's router and the named tests against the test sources.

import (
	"bytes"
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// lfOp is one LibreFang operation.
type lfOp struct {
	method, path string
	// test is the contract test that covers it (in cmd/fangd or
	// transport/http).
	test string
	// notBuilt, when set, is why fangd answers 501 naming the route.
	notBuilt string
	// outOfScope, when set, is why the operation is not part of issue 16.
	outOfScope string
}

const (
	// outOfScopeAgents: the issue takes from /api/agents only what the
	// communication & network areas need (create, read, change, delete,
	// message, stream, channel and MCP bindings, events, deliveries).
	outOfScopeAgents = "agent runtime (workspace files, memory, sessions, skills, identities, bulk and lifecycle controls): not a communication & network operation; issue 16 takes only the agents routes its areas need"
	noAccounts       = "fangd has no dashboard password accounts or passkeys: callers use an API key or OIDC sign-in"
	noTaint          = "MCP taint tracking belongs to the security systems issue, not built yet"
)

var libreFangOps = []lfOp{
	{"GET", "/.well-known/agent.json", "TestA2ALibreFangDraftTasksSend", "", ""},
	{"GET", "/a2a/agents", "TestA2ALibreFangDraftTasksSend", "", ""},
	{"POST", "/a2a/tasks/send", "TestA2APeerTokensOnlyOpenTheProtocolRoutes", "", ""},
	{"GET", "/a2a/tasks/{id}", "TestA2AFangdCallsAJavaScriptAgent", "", ""},
	{"POST", "/a2a/tasks/{id}/cancel", "TestA2ASeedCancelStopsTheTurn", "", ""},
	{"GET", "/api/a2a/agents", "TestA2ASendByURLLibreFangShape", "", ""},
	{"GET", "/api/a2a/agents/{id}", "TestA2ASendByURLLibreFangShape", "", ""},
	{"POST", "/api/a2a/agents/{id}/approve", "TestA2ASendByURLLibreFangShape", "", ""},
	{"POST", "/api/a2a/discover", "TestA2AFangdCallsAJavaScriptAgent", "", ""},
	{"POST", "/api/a2a/send", "TestA2ASendByURLLibreFangShape", "", ""},
	{"GET", "/api/a2a/tasks/{id}/status", "TestA2AFangdCallsAJavaScriptAgent", "", ""},
	{"GET", "/api/agents", "TestLibreFangApprovalsContract", "", ""},
	{"POST", "/api/agents", "TestLibreFangAgentManifestsAndTemplates", "", ""},
	{"POST", "/api/agents/bulk", "", "", outOfScopeAgents},
	{"DELETE", "/api/agents/bulk", "", "", outOfScopeAgents},
	{"POST", "/api/agents/bulk/start", "", "", outOfScopeAgents},
	{"POST", "/api/agents/bulk/stop", "", "", outOfScopeAgents},
	{"GET", "/api/agents/identities", "", "", outOfScopeAgents},
	{"POST", "/api/agents/identities/{name}/reset", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}", "TestLibreFangAgentManifestsAndTemplates", "", ""},
	{"DELETE", "/api/agents/{id}", "TestPatchAndDeleteAgentLibreFangShape", "", ""},
	{"PATCH", "/api/agents/{id}", "TestPatchAndDeleteAgentLibreFangShape", "", ""},
	{"GET", "/api/agents/{id}/channels", "TestAgentBindingsEventsAndDeliveries", "", ""},
	{"PUT", "/api/agents/{id}/channels", "TestAgentBindingsEventsAndDeliveries", "", ""},
	{"POST", "/api/agents/{id}/clone", "", "", outOfScopeAgents},
	{"PATCH", "/api/agents/{id}/config", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/deliveries", "TestAgentBindingsEventsAndDeliveries", "", ""},
	{"GET", "/api/agents/{id}/events", "TestAgentBindingsEventsAndDeliveries", "", ""},
	{"GET", "/api/agents/{id}/files", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/files/{filename}", "", "", outOfScopeAgents},
	{"PUT", "/api/agents/{id}/files/{filename}", "", "", outOfScopeAgents},
	{"DELETE", "/api/agents/{id}/files/{filename}", "", "", outOfScopeAgents},
	{"DELETE", "/api/agents/{id}/hand-runtime-config", "", "", outOfScopeAgents},
	{"PATCH", "/api/agents/{id}/hand-runtime-config", "", "", outOfScopeAgents},
	{"DELETE", "/api/agents/{id}/history", "", "", outOfScopeAgents},
	{"PATCH", "/api/agents/{id}/identity", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/inject", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/logs", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/mcp_servers", "TestAgentBindingsEventsAndDeliveries", "", ""},
	{"PUT", "/api/agents/{id}/mcp_servers", "TestAgentBindingsEventsAndDeliveries", "", ""},
	{"GET", "/api/agents/{id}/memory/export", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/memory/import", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/message", "TestLibreFangAgentBudgetContract", "", ""},
	{"POST", "/api/agents/{id}/message/stream", "TestAgentMessageStreamRefusesBeforeItBegins", "", ""},
	{"GET", "/api/agents/{id}/metrics", "", "", outOfScopeAgents},
	{"PUT", "/api/agents/{id}/mode", "", "", outOfScopeAgents},
	{"PUT", "/api/agents/{id}/model", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/push", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/reload", "", "", outOfScopeAgents},
	{"PUT", "/api/agents/{id}/resume", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/runtime", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/session", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/session/compact", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/session/context", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/session/reboot", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/session/reset", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/sessions", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/sessions", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/sessions/by-label/{label}", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/sessions/import", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/sessions/{session_id}/export", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/sessions/{session_id}/stop", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/sessions/{session_id}/stream", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/sessions/{session_id}/switch", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/sessions/{session_id}/trajectory", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/skills", "", "", outOfScopeAgents},
	{"PUT", "/api/agents/{id}/skills", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/stats", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/stop", "", "", outOfScopeAgents},
	{"PUT", "/api/agents/{id}/suspend", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/tools", "", "", outOfScopeAgents},
	{"PUT", "/api/agents/{id}/tools", "", "", outOfScopeAgents},
	{"GET", "/api/agents/{id}/traces", "", "", outOfScopeAgents},
	{"POST", "/api/agents/{id}/upload", "", "", outOfScopeAgents},
	{"GET", "/api/approvals", "TestLibreFangApprovalsContract", "", ""},
	{"POST", "/api/approvals", "TestLibreFangApprovalsContract", "", ""},
	{"GET", "/api/approvals/audit", "TestLibreFangApprovalsContract", "", ""},
	{"POST", "/api/approvals/batch", "TestLibreFangApprovalsContract", "", ""},
	{"GET", "/api/approvals/count", "TestLibreFangApprovalsContract", "", ""},
	{"GET", "/api/approvals/session/{session_id}", "TestLibreFangApprovalsContract", "", ""},
	{"POST", "/api/approvals/session/{session_id}/approve_all", "TestLibreFangApprovalsContract", "", ""},
	{"POST", "/api/approvals/session/{session_id}/reject_all", "TestLibreFangApprovalsContract", "", ""},
	{"GET", "/api/approvals/{id}", "TestLibreFangApprovalsContract", "", ""},
	{"POST", "/api/approvals/{id}/approve", "TestLibreFangApprovalsContract", "", ""},
	{"POST", "/api/approvals/{id}/modify", "TestLibreFangApprovalsContract", "", ""},
	{"POST", "/api/approvals/{id}/reject", "TestLibreFangApprovalsContract", "", ""},
	{"GET", "/api/audit/export", "TestLibreFangAuditQueryAndExport", "", ""},
	{"GET", "/api/audit/query", "TestLibreFangAuditQueryAndExport", "", ""},
	{"GET", "/api/audit/recent", "TestAuditRecentAndVerifyLibreFangFields", "", ""},
	{"GET", "/api/audit/verify", "TestAuditRecentAndVerifyLibreFangFields", "", ""},
	{"GET", "/api/auth/callback", "TestOIDCCallbackByPostLibreFangShape", "", ""},
	{"POST", "/api/auth/callback", "TestOIDCCallbackByPostLibreFangShape", "", ""},
	{"POST", "/api/auth/change-password", "TestLibreFangDashboardAuthRoutes", noAccounts, ""},
	{"GET", "/api/auth/dashboard-check", "TestLibreFangDashboardAuthRoutes", "", ""},
	{"POST", "/api/auth/dashboard-login", "TestLibreFangDashboardAuthRoutes", noAccounts, ""},
	{"POST", "/api/auth/introspect", "TestOIDCBrowserFlowSessionRolesCSRFAndLogout", "", ""},
	{"GET", "/api/auth/login", "TestOIDCCallbackByPostLibreFangShape", "", ""},
	{"GET", "/api/auth/login/{provider}", "TestOIDCCallbackByPostLibreFangShape", "", ""},
	{"POST", "/api/auth/logout", "TestOIDCBrowserFlowSessionRolesCSRFAndLogout", "", ""},
	{"POST", "/api/auth/passkey/authentication-options", "TestLibreFangDashboardAuthRoutes", noAccounts, ""},
	{"POST", "/api/auth/passkey/authentication-verify", "TestLibreFangDashboardAuthRoutes", noAccounts, ""},
	{"GET", "/api/auth/passkey/credentials", "TestLibreFangDashboardAuthRoutes", noAccounts, ""},
	{"DELETE", "/api/auth/passkey/credentials/{id}", "TestLibreFangDashboardAuthRoutes", noAccounts, ""},
	{"POST", "/api/auth/passkey/registration-options", "TestLibreFangDashboardAuthRoutes", noAccounts, ""},
	{"POST", "/api/auth/passkey/registration-verify", "TestLibreFangDashboardAuthRoutes", noAccounts, ""},
	{"GET", "/api/auth/providers", "TestOIDCBrowserFlowSessionRolesCSRFAndLogout", "", ""},
	{"POST", "/api/auth/refresh", "TestOIDCRefreshRotatesSessionLibreFangShape", "", ""},
	{"GET", "/api/auth/userinfo", "TestOIDCSignInOnTheBinary", "", ""},
	{"GET", "/api/budget", "TestLibreFangAgentBudgetContract", "", ""},
	{"PUT", "/api/budget", "TestLibreFangAgentBudgetContract", "", ""},
	{"GET", "/api/budget/agents", "TestLibreFangAgentBudgetContract", "", ""},
	{"GET", "/api/budget/agents/{id}", "TestLibreFangAgentBudgetContract", "", ""},
	{"PUT", "/api/budget/agents/{id}", "TestLibreFangAgentBudgetContract", "", ""},
	{"GET", "/api/budget/providers", "TestLibreFangProviderBudgetContract", "", ""},
	{"PUT", "/api/budget/providers/{provider_id}", "TestLibreFangProviderBudgetContract", "", ""},
	{"GET", "/api/budget/users", "TestLibreFangUserBudgetContract", "", ""},
	{"GET", "/api/budget/users/{user_id}", "TestLibreFangUserBudgetContract", "", ""},
	{"PUT", "/api/budget/users/{user_id}", "TestLibreFangUserBudgetContract", "", ""},
	{"DELETE", "/api/budget/users/{user_id}", "TestLibreFangUserBudgetContract", "", ""},
	{"GET", "/api/channels", "TestChannelEndpoints", "", ""},
	{"GET", "/api/channels/registry", "TestChannelRegistryAndQRContract", "", ""},
	{"POST", "/api/channels/reload", "TestChannelsSurviveKill9", "", ""},
	{"DELETE", "/api/channels/sidecar/{name}", "TestLibreFangSidecarChannelRoutes", "", ""},
	{"POST", "/api/channels/sidecar/{name}/configure", "TestLibreFangSidecarChannelRoutes", "", ""},
	{"GET", "/api/channels/{name}/qr", "TestChannelRegistryAndQRContract", "", ""},
	{"GET", "/api/comms/events", "TestCommsSendTaskTopologyAndEvents", "", ""},
	{"GET", "/api/comms/events/stream", "TestCommsStreamReplaysAndCaps", "", ""},
	{"POST", "/api/comms/send", "TestCommsSendTaskTopologyAndEvents", "", ""},
	{"POST", "/api/comms/task", "TestCommsSendTaskTopologyAndEvents", "", ""},
	{"GET", "/api/comms/topology", "TestCommsSendTaskTopologyAndEvents", "", ""},
	{"POST", "/api/hooks/agent", "TestInboundHooksAuth", "", ""},
	{"POST", "/api/hooks/wake", "TestInboundHooksAuth", "", ""},
	{"GET", "/api/logs/stream", "TestLogStreamBackfillsWithoutQuery", "", ""},
	{"GET", "/api/mcp/catalog", "TestMCPRestEndpoints", "", ""},
	{"GET", "/api/mcp/catalog/{id}", "TestMCPRestEndpoints", "", ""},
	{"GET", "/api/mcp/health", "TestMCPOnTheBinary", "", ""},
	{"POST", "/api/mcp/reload", "TestMCPRestEndpoints", "", ""},
	{"GET", "/api/mcp/servers", "TestDefaultPolicyGatesUnannotatedToolsOnTheBinary", "", ""},
	{"POST", "/api/mcp/servers", "TestMCPRestEndpoints", "", ""},
	{"GET", "/api/mcp/servers/{name}", "TestDefaultPolicyGatesUnannotatedToolsOnTheBinary", "", ""},
	{"PUT", "/api/mcp/servers/{name}", "TestMCPRestEndpoints", "", ""},
	{"DELETE", "/api/mcp/servers/{name}", "TestMCPOAuthEndToEnd", "", ""},
	{"DELETE", "/api/mcp/servers/{name}/auth/revoke", "TestMCPOAuthEndToEnd", "", ""},
	{"POST", "/api/mcp/servers/{name}/auth/start", "TestMCPOAuthEndToEnd", "", ""},
	{"GET", "/api/mcp/servers/{name}/auth/status", "TestMCPOAuthEndToEnd", "", ""},
	{"POST", "/api/mcp/servers/{name}/reconnect", "TestMCPRestEndpoints", "", ""},
	{"PATCH", "/api/mcp/servers/{name}/taint", "TestMCPOAuthEndToEnd", noTaint, ""},
	{"GET", "/api/mcp/taint-rules", "TestMCPOAuthEndToEnd", noTaint, ""},
	{"GET", "/api/network/status", "TestOFPOffByDefault", "", ""},
	{"GET", "/api/network/trusted-peers", "TestOFPSwappedIdentityKey", "", ""},
	{"POST", "/api/pairing/complete", "TestPairingOnTheBinarySurvivesKill9", "", ""},
	{"GET", "/api/pairing/devices", "TestPairingAcceptsLibreFangShapes", "", ""},
	{"DELETE", "/api/pairing/devices/{id}", "TestPairingOnTheBinarySurvivesKill9", "", ""},
	{"POST", "/api/pairing/notify", "TestPairingOnTheBinarySurvivesKill9", "", ""},
	{"POST", "/api/pairing/request", "TestPairingOnTheBinarySurvivesKill9", "", ""},
	{"GET", "/api/peers", "TestOFPThreeDaemons", "", ""},
	{"GET", "/api/peers/{id}", "TestOFPThreeDaemons", "", ""},
	{"GET", "/api/security", "TestAuditAcceptThroughTheAPI", "", ""},
	{"GET", "/api/usage", "TestLibreFangUsageContract", "", ""},
	{"GET", "/api/usage/by-model", "TestLibreFangUsageContract", "", ""},
	{"GET", "/api/usage/by-model/performance", "TestLibreFangUsageContract", "", ""},
	{"GET", "/api/usage/daily", "TestLibreFangUsageContract", "", ""},
	{"GET", "/api/usage/summary", "TestLibreFangUsageContract", "", ""},
	{"POST", "/mcp", "TestAgentBindingsEventsAndDeliveries", "", ""},
}

// routeUnmatched reports whether an answer is the router's own (no route
// for the path, or not for the method), not a handler's.
func routeUnmatched(status int, raw []byte) bool {
	var e struct{ Code, Error string }
	json.Unmarshal(raw, &e)
	return status == http.StatusMethodNotAllowed && e.Code == "method_not_allowed" ||
		status == http.StatusNotFound && e.Code == "not_found" && strings.HasPrefix(e.Error, "no route for ")
}

// testSources maps each test function of cmd/fangd and transport/http to
// its source text.
func testSources(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, dir := range []string{".", "../../transport/http"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
		for _, f := range files {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			fs := token.NewFileSet()
			af, err := parser.ParseFile(fs, f, src, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range af.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok && strings.HasPrefix(fd.Name.Name, "Test") {
					out[fd.Name.Name] = string(src[fs.Position(fd.Pos()).Offset:fs.Position(fd.End()).Offset])
				}
			}
		}
	}
	return out
}

var placeholder = regexp.MustCompile(`\{[^}]+\}`)

// TestLibreFangOperationsServed checks the operations list: it holds each
// operation once; every operation in scope is served by the real binary's
// router (its answer is a handler's, never the router's 404 or 405), and
// a not-built one answers 501 naming the route and why; and each names a
// test that exists and drives that method and path.
func TestLibreFangOperationsServed(t *testing.T) {
	t.Parallel()
	srcs := testSources(t)
	seen := map[string]bool{}
	inScope := 0
	for _, op := range libreFangOps {
		k := op.method + " " + op.path
		if seen[k] {
			t.Errorf("%s is listed twice", k)
		}
		seen[k] = true
		if op.outOfScope != "" {
			continue
		}
		inScope++
		body, ok := srcs[op.test]
		if op.test == "" || !ok {
			t.Errorf("%s: no contract test (%q does not exist)", k, op.test)
			continue
		}
		// The test says the method (GETs may go through a stream or CLI
		// helper) and every fixed part of the path (without /api, so
		// /api/v1 spellings count).
		if op.method != "GET" && !strings.Contains(body, `"`+op.method+`"`) {
			t.Errorf("%s: %s never sends %s", k, op.test, op.method)
		}
		for _, part := range placeholder.Split(strings.TrimPrefix(op.path, "/api"), -1) {
			if part != "" && part != "/" && !strings.Contains(body, part) {
				t.Errorf("%s: %s never names %q", k, op.test, part)
			}
		}
	}
	if len(libreFangOps) != 164 || inScope != 114 {
		t.Fatalf("%d operations, %d in scope; LibreFang 2026.8.19 has 164 in these areas, 114 of them in scope", len(libreFangOps), inScope)
	}

	_, _, cfg := fakes(t, "")
	td := runFangd(t, t.TempDir(), cfg, keyEnv...)
	client := &http.Client{Timeout: 30 * time.Second}
	for _, op := range libreFangOps {
		if op.outOfScope != "" {
			continue
		}
		path := placeholder.ReplaceAllString(op.path, "lfprobe")
		var rd io.Reader
		if op.method != "GET" && op.method != "DELETE" {
			rd = bytes.NewReader([]byte(`{}`))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		req, _ := http.NewRequestWithContext(ctx, op.method, td.base+path, rd)
		if rd != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Accept", "application/json, text/event-stream")
		res, err := client.Do(req)
		if err != nil {
			cancel()
			t.Errorf("%s %s: %v", op.method, path, err)
			continue
		}
		var raw []byte
		if !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
			raw, _ = io.ReadAll(io.LimitReader(res.Body, 1<<16))
		}
		res.Body.Close()
		cancel()
		switch {
		case routeUnmatched(res.StatusCode, raw):
			t.Errorf("%s %s is not served: %d %s", op.method, op.path, res.StatusCode, raw)
		case op.notBuilt != "":
			var e struct{ Code, Error string }
			json.Unmarshal(raw, &e)
			if res.StatusCode != http.StatusNotImplemented || e.Code != "not_implemented" || !strings.Contains(e.Error, op.method+" "+op.path) {
				t.Errorf("%s %s: not built, so 501 naming the route; got %d %s", op.method, op.path, res.StatusCode, raw)
			}
		case res.StatusCode == http.StatusNotImplemented:
			t.Errorf("%s %s answers 501 but is listed as built: %s", op.method, op.path, raw)
		}
	}
}
