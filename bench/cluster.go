package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/fangd/fangd/actors/cluster/devetcd"
	"github.com/fangd/fangd/actors/llm/llmtest"
)

// benchCluster is the embedded etcd of one cluster scenario
// (cluster_budget.go, cluster_failover.go, cluster_route.go); node starts
// a fangd in cluster mode on it.
type benchCluster struct {
	env  *Env
	name string
	etcd string
	// vars go to every node: one vault key for all (channel secrets are
	// sealed with it in etcd), the fake model's key once withLLM ran.
	vars []string
}

// startCluster starts the embedded etcd of a cluster called name, closed
// with env, and draws the run's vault key.
func startCluster(env *Env, name string) (*benchCluster, error) {
	vaultKey, err := randomHex(32)
	if err != nil {
		return nil, err
	}
	etcd, err := devetcd.Start(mkTemp(env, "etcd"), "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	env.onClose(etcd.Close)
	return &benchCluster{env: env, name: name, etcd: etcd.Endpoint, vars: []string{"FANGD_VAULT_KEY=" + vaultKey}}, nil
}

// withLLM starts the fake OpenAI model the nodes call (fakeOAIConfig),
// closed with env, and gives every node its key.
func (c *benchCluster) withLLM(key string) *llmtest.Fake {
	llm := llmtest.NewOpenAI(key)
	c.env.onClose(llm.Close)
	c.vars = append(c.vars, llmKeyEnv+"="+key)
	return llm
}

// node starts the cluster's node nodeName in a fresh home named after
// dir, with extra config and environment; it is stopped with env (also
// when it failed to become healthy).
func (c *benchCluster) node(ctx context.Context, dir, nodeName, extra string, vars ...string) (*Daemon, error) {
	cfg := fmt.Sprintf("\n[cluster]\netcd = [%q]\nname = %q\nnode_name = %q\n", c.etcd, c.name, nodeName) + extra
	d, err := StartDaemonWith(ctx, c.env.Opts.Fangd, mkTemp(c.env, dir), cfg, append(vars, c.vars...))
	if d != nil {
		c.env.onClose(func() { _ = d.Stop() })
	}
	return d, err
}

// randomHex is n random bytes in hex: a run's vault or API key.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// fakeOAIConfig is the provider fakeoai at baseURL (its key in
// llmKeyEnv) with the model gpt-test at perM USD per million tokens
// either way.
func fakeOAIConfig(baseURL string, perM float64) string {
	return fmt.Sprintf(`
[providers.fakeoai]
api = "openai"
base_url = %q
trusted = true
api_key_env = %q

[[models]]
provider = "fakeoai"
id = "gpt-test"
input_per_m = %.1f
output_per_m = %.1f
context_window = 128000
`, baseURL, llmKeyEnv, perM, perM)
}
