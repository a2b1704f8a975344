"""transferfeat: reproduce 'How transferable are features in deep neural networks?' with real Caffe."""
__version__ = "0.1.0"
