// etcd for the local world: etcd's own entry point, from the etcd server module the Kubernetes
// modules already require.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
