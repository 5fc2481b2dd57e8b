package gc

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/storage"
)

// Two replicas on one storage: one collects, the other leaves it to it.
func TestCollectorOneReplicaAtATime(t *testing.T) {
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	opts := Options{MaxAge: 24 * time.Hour}
	replicas := []*Collector{
		{Metadata: metadata.New(store, nil), Interval: time.Hour, Options: opts, settle: 200 * time.Millisecond},
		{Metadata: metadata.New(store, nil), Interval: time.Hour, Options: opts, settle: 200 * time.Millisecond},
	}
	var wg sync.WaitGroup
	ran := make([]bool, len(replicas))
	for i, r := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			ran[i], _, err = r.Once(ctx)
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ran[0] == ran[1] {
		t.Fatalf("replicas ran: %v; want exactly one", ran)
	}
	// The holder runs again next time; the other still does not.
	holder, other := replicas[0], replicas[1]
	if ran[1] {
		holder, other = other, holder
	}
	if ok, _, err := other.Once(ctx); ok || err != nil {
		t.Errorf("the other replica ran while the lease was held: %v, %v", ok, err)
	}
	if ok, _, err := holder.Once(ctx); !ok || err != nil {
		t.Errorf("the holder did not run again: %v, %v", ok, err)
	}
}
