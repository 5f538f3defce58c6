# Container images for the test ground's node (quantcore.devcluster.images): the runtime and
# Spark images from images/Dockerfile.*, the spark-operator image and a pause image, built with
# buildah on bases made from Debian packages, cached by content in $(QUANTCORE_CACHE)/images.
.PHONY: images images-deps

# buildah and debootstrap, installed only when missing.
images-deps:
	@missing=(); \
	command -v buildah >/dev/null || missing+=(buildah); \
	command -v debootstrap >/dev/null || missing+=(debootstrap); \
	if (( $${#missing[@]} )); then \
	  echo "installing $${missing[*]}"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$${missing[@]}"; \
	fi

# Cold: debootstrap, pip and a Go build; warm: hashing the build contexts only.
images: setup images-deps services-jars
	nice -n 10 $(BIN)/python -m quantcore.devcluster images

TEST_PREREQS += images
