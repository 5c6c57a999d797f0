package webhook_test

import (
	"fmt"
	"log"
	"net/http"
	"os"

	"github.com/ferryhq/ferry/webhook"
)

// A receiver of ferry's completion webhooks: verify the signature (which
// also refuses a request replayed after the 5-minute window), drop event
// ids already seen, act, answer 2xx.
func ExampleVerifyRequest() {
	secret := []byte(os.Getenv("FERRY_WEBHOOK_SECRET"))
	seen := map[string]bool{} // a real receiver keeps these in its database
	http.HandleFunc("POST /ferry-events", func(w http.ResponseWriter, r *http.Request) {
		e, err := webhook.VerifyRequest(r, secret)
		if err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if !seen[e.EventID] {
			seen[e.EventID] = true
			log.Printf("transfer %s %s: %s (%d bytes)", e.ID, e.State, e.Dest, e.Size)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	fmt.Println("listening")
	// Output: listening
}
