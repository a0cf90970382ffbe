"""Faces: dlib's detector, 68 landmarks and FFHQ alignment (:mod:`.landmarks`), the YuNet detector
(:mod:`.yunet`), dlib's ResNet in torch (:mod:`.dlib_resnet`) and the face recognizers behind the identity
metrics (:mod:`.identity`). Shared by the dataset half (synthesis, realism) and the benchmark half."""
