package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nixery/nixery/internal/layers"
)

// loadPopularity reads popularity data from a URL (NIX_POPULARITY_URL, as
// in the original Nixery) or a file, and returns it with an identity for
// cache keys. "" means no data.
func loadPopularity(ctx context.Context, from string) (map[string]int, string, error) {
	if from == "" {
		return nil, "", nil
	}
	var data []byte
	var err error
	if strings.HasPrefix(from, "http://") || strings.HasPrefix(from, "https://") {
		data, err = fetch(ctx, from)
	} else {
		data, err = os.ReadFile(strings.TrimPrefix(from, "file://"))
	}
	if err != nil {
		return nil, "", fmt.Errorf("popularity data %s: %w", from, err)
	}
	pop, err := layers.ParsePopularity(strings.NewReader(string(data)))
	if err != nil {
		return nil, "", fmt.Errorf("popularity data %s: %w", from, err)
	}
	sum := sha256.Sum256(data)
	return pop, hex.EncodeToString(sum[:8]), nil
}

func fetch(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 256<<20))
}
