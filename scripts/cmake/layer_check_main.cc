// Linked against one whole library and the layers below it (PipelmLayers.cmake): if this links,
// the library references nothing above its layer.
int main() { return 0; }
