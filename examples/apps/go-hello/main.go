// go-hello: the program in the example Go runtime image. It prints who it
// runs as and fetches nothing, so the image can be checked offline.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("hello from go-hello, uid %d, home %s\n", os.Getuid(), os.Getenv("HOME"))
}
